"""The agreements one country's gateway serves at once: one per peer country.

A message belongs to the agreement between its sender's country and its recipient's country, and
only to it: the sender's country is the one its certificate was issued in (`sealing.verify_envelope`
checks that before any policy), so a message cannot be read under another pair's agreement, and a
peer cannot speak for a third country (no agreement of ours binds two other countries). The set
answers the same questions as one `Agreement`, so the gateway's roles ask it without knowing how many
agreements there are; a lone agreement is a set of one.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from pathlib import Path

from broker.core.agreement import (
    Agreement,
    Authority,
    Role,
    Rule,
    load_agreement,
    load_shipped_agreement,
    shipped_agreement_ids,
)
from broker.core.errors import ConfigError, PolicyError, Reason


class AgreementSet:
    """`country`'s agreements, each with a different peer country; checked consistent at start."""

    def __init__(self, agreements: Sequence[Agreement], *, country: str) -> None:
        if not agreements:
            raise ConfigError(Reason.CONFIG_INVALID, f"{country} serves no agreement")
        self.country = country
        self.by_peer: dict[str, Agreement] = {}
        for agreement in agreements:
            peer = agreement.peer_country(country)  # ConfigError when `country` is not party to it
            if peer in self.by_peer:
                raise ConfigError(
                    Reason.CONFIG_INVALID,
                    f"{self.by_peer[peer].id} and {agreement.id} are both agreements of {country} with "
                    f"{peer}: one pair of countries has one agreement file (a renewal is a [[period]] in it)",
                )
            self.by_peer[peer] = agreement
        self.agreements = tuple(self.by_peer.values())
        self.id = ", ".join(a.id for a in self.agreements)
        self.peers = tuple(self.by_peer)
        self.countries = (country, *self.peers)
        authorities: dict[str, Authority] = {}
        for agreement in self.agreements:
            for authority in agreement.authorities:
                known = authorities.setdefault(authority.id, authority)
                if known.country != authority.country:
                    raise ConfigError(
                        Reason.CONFIG_INVALID,
                        f"{authority.id} belongs to {known.country} in one agreement and to "
                        f"{authority.country} in {agreement.id}",
                    )
        self._by_id = authorities
        self.authorities = tuple(authorities.values())
        self.ids = frozenset(authorities)
        # Every agreement's rules (a type may appear once per agreement): who sends at all, not policy.
        self.rules = tuple(rule for agreement in self.agreements for rule in agreement.rules)
        gateways = {a.gateway(country).id for a in self.agreements}
        if len(gateways) != 1:
            raise ConfigError(
                Reason.CONFIG_INVALID, f"{country}'s agreements name different gateways: {sorted(gateways)}"
            )

    @classmethod
    def single(cls, agreement: Agreement, country: str) -> AgreementSet:
        return cls([agreement], country=country)

    # -- which agreement ---------------------------------------------------------------------------
    def for_peer(self, peer_country: str) -> Agreement:
        try:
            return self.by_peer[peer_country]
        except KeyError:
            raise PolicyError(
                Reason.POLICY_NO_AGREEMENT,
                f"{self.country} has no agreement with {peer_country} (its agreements: {self.id})",
            ) from None

    def between(self, country_a: str, country_b: str) -> Agreement:
        """The agreement of a message between two countries; one of them must be ours."""
        if country_a == self.country and country_b != self.country:
            return self.for_peer(country_b)
        if country_b == self.country and country_a != self.country:
            return self.for_peer(country_a)
        raise PolicyError(
            Reason.POLICY_NO_AGREEMENT,
            f"no agreement of {self.country} covers messages between {country_a} and {country_b}",
        )

    def of_authority(self, authority_id: str) -> Agreement:
        """The agreement an authority of a peer country is party to (ours are party to several)."""
        return self.for_peer(self.authority(authority_id).country)

    def named_by(self, authority_id: str | None) -> str | None:
        """The id of the agreement an exchange with `authority_id` falls under (an audit entry's
        peer), None for one of ours or of no peer (an authority id starts with its country)."""
        if not authority_id:
            return None
        agreement = self.by_peer.get(authority_id.partition("-")[0])
        return agreement.id if agreement is not None else None

    # -- the questions one agreement answers -------------------------------------------------------
    def authority(self, authority_id: str) -> Authority:
        found = self._by_id.get(authority_id)  # asked for every message: a look-up, not a scan
        if found is not None:
            return found
        raise PolicyError(
            Reason.POLICY_RECIPIENT_UNKNOWN,
            f"authority {authority_id!r} is not party to any agreement of {self.country} ({self.id})",
        )

    def gateway(self, country: str) -> Authority:
        if country == self.country:
            return self.agreements[0].gateway(country)
        try:
            return self.for_peer(country).gateway(country)
        except PolicyError as missing:
            raise ConfigError(Reason.CONFIG_INVALID, missing.diagnostic) from None

    def peer_country(self, country: str) -> str:
        """The one peer of a country with a single agreement (what single-link tools ask)."""
        if country != self.country or len(self.peers) != 1:
            raise ConfigError(
                Reason.CONFIG_INVALID,
                f"{self.country} has {len(self.peers)} peers ({', '.join(self.peers)}): name the peer",
            )
        return self.peers[0]

    def rule(self, message_type: str) -> Rule:
        """The first agreement's rule for the type (its article, for display); see `check_send`."""
        for agreement in self.agreements:
            if message_type in agreement.types():
                return agreement.rule(message_type)
        raise PolicyError(
            Reason.POLICY_TYPE_NOT_COVERED,
            f"no agreement of {self.country} ({self.id}) covers {message_type!r}",
        )

    def types(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t for a in self.agreements for t in a.types()))

    def holders_of(self, role: Role, country: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(h for a in self.agreements for h in a.holders_of(role, country)))

    def senders_of(self, message_type: str, country: str) -> tuple[str, ...]:
        return tuple(
            dict.fromkeys(
                s
                for a in self.agreements
                if message_type in a.types()
                for s in a.senders_of(message_type, country)
            )
        )

    def only_sender(self, message_type: str, country: str, *, among: Collection[str] | None = None) -> str:
        candidates = [a for a in self.senders_of(message_type, country) if among is None or a in among]
        if len(candidates) != 1:
            raise PolicyError(
                Reason.POLICY_SENDER_NOT_ALLOWED,
                f"name the sender of {message_type}: {country} has {len(candidates)} authorities allowed "
                f"to send it ({', '.join(candidates) or 'none'})",
            )
        return candidates[0]

    def check_send(
        self, *, message_type: str, sender_id: str, recipient_id: str, at: datetime | None = None
    ) -> Rule:
        """The policy of the one agreement between the sender's and the recipient's countries."""
        try:
            sender = self.authority(sender_id)
        except PolicyError:
            raise PolicyError(
                Reason.POLICY_SENDER_NOT_ALLOWED,
                f"sender {sender_id!r} is not party to any agreement of {self.country} ({self.id})",
            ) from None
        recipient = self.authority(recipient_id)
        if sender.country == recipient.country:  # the agreement's own words for it
            return self.agreements[0].check_send(
                message_type=message_type, sender_id=sender_id, recipient_id=recipient_id, at=at
            )
        agreement = self.between(sender.country, recipient.country)
        return agreement.check_send(
            message_type=message_type, sender_id=sender_id, recipient_id=recipient_id, at=at
        )

    def check_subscriber(self, *, subscriber_id: str, message_type: str, country: str) -> None:
        """Allowed when an agreement the subscriber is party to lets its role receive the type."""
        refusal: PolicyError | None = None
        for agreement in self.agreements:
            if subscriber_id not in {a.id for a in agreement.authorities}:
                continue
            try:
                agreement.check_subscriber(
                    subscriber_id=subscriber_id, message_type=message_type, country=country
                )
            except PolicyError as error:
                refusal = error
                continue
            return
        raise refusal or PolicyError(
            Reason.POLICY_SUBSCRIBER_NOT_ALLOWED,
            f"{subscriber_id} may not receive {message_type} in {country} under {self.id}",
        )


# What a function taking "the agreement" accepts: one, or a country's set of them.
Agreements = Agreement | AgreementSet


def is_agreement_path(entry: str) -> bool:
    """An `agreements` entry naming a file (`renewed/tj-uz-2021.toml`), not a shipped id."""
    return entry.endswith(".toml") or "/" in entry


def load_agreements(country: str, entries: Sequence[str], *, default: Path | None = None) -> AgreementSet:
    """`entries`: shipped ids (`tj-uz-2021`) or paths of agreement files; none: `default` (a file) or
    the first shipped agreement naming the country (TJ and RU: tj-ru-2004; UZ: tj-uz-2021)."""
    if not entries:
        shipped = shipped_agreements_of(country) if default is None else ()
        return AgreementSet.single(shipped[0] if shipped else load_agreement(default), country)
    loaded = [load_agreement(default)] if default is not None else []
    for entry in entries:
        if is_agreement_path(entry):
            loaded.append(load_agreement(Path(entry)))
        else:
            loaded.append(load_shipped_agreement(entry))
    return AgreementSet(loaded, country=country)


def shipped_agreements_of(country: str) -> tuple[Agreement, ...]:
    """The shipped agreements `country` is party to (TJ: tj-ru-2004, tj-uz-2021)."""
    shipped = (load_shipped_agreement(agreement_id) for agreement_id in shipped_agreement_ids())
    return tuple(agreement for agreement in shipped if country in agreement.countries)


def shipped_pairs() -> str:
    """`TJ and RU, TJ and UZ`: who the shipped agreements are between, for an error message."""
    return ", ".join(
        " and ".join(load_shipped_agreement(agreement_id).countries)
        for agreement_id in shipped_agreement_ids()
    )
