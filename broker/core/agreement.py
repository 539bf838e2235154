"""An agreement as configuration: two countries, their authorities and who may send what to whom.

The rules read like the agreement: each names its article (or the plan's item: `clause`).
`Agreement.check_send` is the policy a receiving gateway applies to every verified envelope (type
covered, roles, period of validity); `check_subscriber` is the one applied before delivering to a
local subscriber. A country with several agreements serves them through `agreement_set.AgreementSet`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection
from datetime import date, datetime
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from broker.core.errors import ConfigError, PolicyError, Reason

# The exchange's own types: a message sent within an agreement's period is still receipted and
# witnessed after it ends, and trust (certificates, CRLs) stays current, so they are not bound to it.
PROTOCOL_TYPES = frozenset({"receipt", "receipt.batch", "trust.update", "checkpoint.witness"})

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


class Period(BaseModel):
    """A span in which the agreement is in force, both days included, and the document that says so."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    start: date = Field(alias="from")
    end: date = Field(alias="until")
    basis: str = Field(min_length=1)

    def covers(self, day: date) -> bool:
        return self.start <= day <= self.end

    def __str__(self) -> str:
        return f"{self.start.isoformat()} to {self.end.isoformat()} ({self.basis})"


class Agreement(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    title: str
    countries: tuple[str, str]
    authorities: tuple[Authority, ...] = Field(alias="authority", min_length=1)
    rules: tuple[Rule, ...] = Field(alias="rule", min_length=1)
    # How the document names its provisions: "Art." for a treaty, "item" for a joint plan's items.
    clause: str = "Art."
    # When the agreement is in force (UTC days of `created_at`); none: until it is terminated. A
    # renewal is one more `[[period]]` naming the document that renews it (docs/decisions.md).
    periods: tuple[Period, ...] = Field(default=(), alias="period")

    @model_validator(mode="after")
    def _consistent(self) -> Agreement:
        if self.countries[0] == self.countries[1]:
            raise ValueError("an agreement is between two different countries")
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
        if any(p.end < p.start for p in self.periods):
            raise ValueError("a period ends before it starts")
        return self

    def cite(self, rule: Rule) -> str:
        """`Art. 15.5`, `item 7`: the provision a rule rests on, as the document names it."""
        return rule.article if rule.type in PROTOCOL_TYPES else f"{self.clause} {rule.article}"

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
            Reason.POLICY_TYPE_NOT_COVERED,
            f"agreement {self.id} does not cover {message_type!r} (it covers {', '.join(self.types())})",
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
    def check_period(self, at: datetime, *, message_type: str) -> None:
        """Raise PolicyError unless the agreement is in force on `at`'s day (protocol types always are)."""
        if not self.periods or message_type in PROTOCOL_TYPES:
            return
        day = at.date()
        if any(period.covers(day) for period in self.periods):
            return
        raise PolicyError(
            Reason.POLICY_OUTSIDE_PERIOD,
            f"agreement {self.id} is in force {'; '.join(map(str, self.periods))}, not on "
            f"{day.isoformat()}: a renewal adds a [[period]] to the agreement file",
        )

    def check_send(
        self, *, message_type: str, sender_id: str, recipient_id: str, at: datetime | None = None
    ) -> Rule:
        """Raise PolicyError unless the agreement lets `sender_id` send this type to `recipient_id`
        (on `at`'s day, when given: the message's `created_at`)."""
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
                f"{self.id} {self.cite(rule)}: {sender_id} ({', '.join(sender.roles)}) may not send "
                f"{message_type}",
                article=rule.article,
            )
        if not set(recipient.roles) & set(rule.recipients):
            raise PolicyError(
                Reason.POLICY_SENDER_NOT_ALLOWED,
                f"{self.id} {self.cite(rule)}: {message_type} may not be addressed to {recipient_id}",
                article=rule.article,
            )
        if at is not None:
            self.check_period(at, message_type=message_type)
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


SHIPPED_DEFAULT = "tj-ru-2004"


def shipped_agreement_ids() -> tuple[str, ...]:
    """The agreements shipped in `broker/core/agreements/` (`tj-ru-2004`, `tj-uz-2021`, ...)."""
    folder = resources.files("broker.core.agreements")
    return tuple(sorted(e.name.removesuffix(".toml") for e in folder.iterdir() if e.name.endswith(".toml")))


def load_shipped_agreement(agreement_id: str) -> Agreement:
    if agreement_id not in shipped_agreement_ids():
        raise ConfigError(
            Reason.CONFIG_INVALID,
            f"no shipped agreement {agreement_id!r} (shipped: {', '.join(shipped_agreement_ids())}); "
            "name a TOML file instead",
        )
    text = resources.files("broker.core.agreements").joinpath(f"{agreement_id}.toml").read_text("utf-8")
    agreement = parse_agreement(text)
    if agreement.id != agreement_id:
        raise ConfigError(Reason.CONFIG_INVALID, f"{agreement_id}.toml names itself {agreement.id!r}")
    return agreement


def load_agreement(path: Path | None = None) -> Agreement:
    """Load an agreement file; without a path, the shipped Tajikistan–Russia agreement."""
    if path is None:
        return load_shipped_agreement(SHIPPED_DEFAULT)
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(Reason.CONFIG_INVALID, f"cannot read agreement {path}: {exc}") from None
    return parse_agreement(text)
