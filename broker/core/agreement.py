"""An agreement as configuration: two countries, their authorities and who may send what to whom.

The rules read like the agreement: each names its article. `Agreement.check_send` is the policy a
receiving gateway applies to every verified envelope; `check_subscriber` is the one applied before
delivering to a local subscriber.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from broker.core.errors import ConfigError, PolicyError, Reason

Role = Literal["competent_ministry", "interior_ministry", "consulate", "gateway", "ca", "auditor"]


class Authority(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[A-Z]{2}-[A-Z0-9-]+$")
    country: str = Field(pattern=r"^[A-Z]{2}$")
    roles: tuple[Role, ...] = Field(min_length=1)
    name: str


class Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    type: str
    article: str
    senders: tuple[Role, ...] = Field(alias="from", min_length=1)
    recipients: tuple[Role, ...] = Field(alias="to", min_length=1)
    subscribers: tuple[Role, ...] = ()


class Agreement(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    title: str
    countries: tuple[str, str]
    authorities: tuple[Authority, ...] = Field(alias="authority", min_length=1)
    rules: tuple[Rule, ...] = Field(alias="rule", min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Agreement:
        ids = [a.id for a in self.authorities]
        if len(ids) != len(set(ids)):
            raise ValueError("authority ids must be unique")
        if any(a.country not in self.countries for a in self.authorities):
            raise ValueError("every authority must belong to one of the two countries")
        types = [r.type for r in self.rules]
        if len(types) != len(set(types)):
            raise ValueError("one rule per message type")
        for country in self.countries:
            if not any("gateway" in a.roles and a.country == country for a in self.authorities):
                raise ValueError(f"country {country} has no gateway authority")
        return self

    # -- lookups -------------------------------------------------------------------------------
    def authority(self, authority_id: str) -> Authority:
        for candidate in self.authorities:
            if candidate.id == authority_id:
                return candidate
        raise PolicyError(
            Reason.POLICY_RECIPIENT_UNKNOWN, f"authority {authority_id!r} is not party to agreement {self.id}"
        )

    def rule(self, message_type: str) -> Rule:
        for candidate in self.rules:
            if candidate.type == message_type:
                return candidate
        raise PolicyError(
            Reason.POLICY_SENDER_NOT_ALLOWED, f"agreement {self.id} has no rule for type {message_type!r}"
        )

    def gateway(self, country: str) -> Authority:
        for candidate in self.authorities:
            if candidate.country == country and "gateway" in candidate.roles:
                return candidate
        raise ConfigError(
            Reason.CONFIG_INVALID,
            f"{country} has no gateway in agreement {self.id} (its countries: {', '.join(self.countries)})",
        )

    def peer_country(self, country: str) -> str:
        if country not in self.countries:
            raise ConfigError(Reason.CONFIG_INVALID, f"{country} is not party to agreement {self.id}")
        return self.countries[1] if self.countries[0] == country else self.countries[0]

    def holders_of(self, role: Role, country: str) -> tuple[str, ...]:
        """The authorities of `country` that have `role` (e.g. its auditors)."""
        return tuple(a.id for a in self.authorities if a.country == country and role in a.roles)

    def types(self) -> tuple[str, ...]:
        return tuple(r.type for r in self.rules)

    def senders_of(self, message_type: str, country: str) -> tuple[str, ...]:
        """The authorities of `country` whose roles may send `message_type`."""
        rule = self.rule(message_type)
        return tuple(
            a.id for a in self.authorities if a.country == country and set(a.roles) & set(rule.senders)
        )

    def only_sender(self, message_type: str, country: str, *, among: Collection[str] | None = None) -> str:
        """The one authority of `country` (of those `among`, if given) that may send `message_type`."""
        candidates = [a for a in self.senders_of(message_type, country) if among is None or a in among]
        if len(candidates) != 1:
            raise PolicyError(
                Reason.POLICY_SENDER_NOT_ALLOWED,
                f"name the sender of {message_type}: {country} has {len(candidates)} authorities allowed "
                f"to send it ({', '.join(candidates) or 'none'})",
            )
        return candidates[0]

    # -- policy --------------------------------------------------------------------------------
    def check_send(self, *, message_type: str, sender_id: str, recipient_id: str) -> Rule:
        """Raise PolicyError unless the agreement lets `sender_id` send this type to `recipient_id`."""
        rule = self.rule(message_type)
        try:
            sender = self.authority(sender_id)
        except PolicyError:
            raise PolicyError(
                Reason.POLICY_SENDER_NOT_ALLOWED, f"sender {sender_id!r} is not party to agreement {self.id}"
            ) from None
        recipient = self.authority(recipient_id)
        if sender.country == recipient.country:
            raise PolicyError(
                Reason.POLICY_SENDER_NOT_ALLOWED,
                f"{sender_id} and {recipient_id} are both in {sender.country}; the exchange carries "
                "messages between the parties",
            )
        if not set(sender.roles) & set(rule.senders):
            raise PolicyError(
                Reason.POLICY_SENDER_NOT_ALLOWED,
                f"Art. {rule.article}: {sender_id} ({', '.join(sender.roles)}) may not send {message_type}",
                article=rule.article,
            )
        if not set(recipient.roles) & set(rule.recipients):
            raise PolicyError(
                Reason.POLICY_SENDER_NOT_ALLOWED,
                f"Art. {rule.article}: {message_type} may not be addressed to {recipient_id}",
                article=rule.article,
            )
        return rule

    def check_subscriber(self, *, subscriber_id: str, message_type: str, country: str) -> None:
        """A local subscriber may receive a type only if its role is listed for that type."""
        subscriber = self.authority(subscriber_id)
        rule = self.rule(message_type)
        if subscriber.country != country or not set(subscriber.roles) & set(rule.subscribers):
            raise PolicyError(
                Reason.POLICY_SUBSCRIBER_NOT_ALLOWED,
                f"{subscriber_id} may not receive {message_type} in {country} under agreement {self.id}",
                article=rule.article,
            )


def parse_agreement(text: str) -> Agreement:
    try:
        return Agreement.model_validate(tomllib.loads(text))
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise ConfigError(Reason.CONFIG_INVALID, f"agreement file is invalid: {exc}") from None


def load_agreement(path: Path | None = None) -> Agreement:
    """Load an agreement file; without a path, the shipped Tajikistan–Russia agreement."""
    if path is None:
        text = resources.files("broker.core.agreements").joinpath("tj-ru-2004.toml").read_text("utf-8")
    else:
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            raise ConfigError(Reason.CONFIG_INVALID, f"cannot read agreement {path}: {exc}") from None
    return parse_agreement(text)
