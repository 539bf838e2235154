"""Who submits through a country's gateway and who subscribes to it: authorities of the agreement,
and their RabbitMQ users.

One submitting user per ministry authority, named after the country's vhost like the other users of
a link: `<vhost>-<authority id without its country prefix, lower case>` (`tj-mol` for TJ-MOL in vhost
`tj`, `t-1a2b3c-ru-mintrud` in a test vhost); the gateway maps the `user_id` RabbitMQ vouches for back
to the authority. One subscribing user per authority that may have messages delivered to it
(`tj-sub-consulate-moscow`), which may only consume its own queue. The topology plan creates them.
Pure: names and the agreement only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

from broker.core.agreement import Agreement
from broker.core.envelope import AUTHORITY_PATTERN
from broker.core.errors import ConfigError, Reason

# Roles that never submit through the gateway: the gateway itself, and the CA operator whose trust
# updates `broker keys` sends.
PROTOCOL_ROLES = frozenset({"gateway", "ca"})
_AUTHORITY = re.compile(AUTHORITY_PATTERN)


def vhost_of(url: str) -> str:
    """The vhost an AMQP URL names (`amqp://user:pw@host:5672/tj?...` → `tj`)."""
    return unquote(urlsplit(url).path.removeprefix("/"))


def submitter_user(vhost: str, country: str, authority_id: str) -> str:
    """The RabbitMQ user a ministry system of `authority_id` submits as: TJ-MOL → `<vhost>-mol`."""
    if not _AUTHORITY.fullmatch(authority_id):
        raise ConfigError(Reason.CONFIG_INVALID, f"authority id {authority_id!r} cannot name a user")
    return f"{vhost}-{authority_id.lower().removeprefix(country.lower() + '-')}"


def subscriber_user(vhost: str, country: str, authority_id: str) -> str:
    """The RabbitMQ user a subscriber of `authority_id` consumes as: TJ-CONSULATE-MOSCOW →
    `<vhost>-sub-consulate-moscow`. Its own user, never its submitting one: one job per user."""
    if not _AUTHORITY.fullmatch(authority_id):
        raise ConfigError(Reason.CONFIG_INVALID, f"authority id {authority_id!r} cannot name a user")
    return f"{vhost}-sub-{authority_id.lower().removeprefix(country.lower() + '-')}"


def submitting_authorities(agreement: Agreement, country: str) -> tuple[str, ...]:
    """Authorities of `country` that may send some type of the agreement (its ministries), in order."""
    sending_roles = {role for rule in agreement.rules for role in rule.senders} - PROTOCOL_ROLES
    return tuple(
        authority.id
        for authority in agreement.authorities
        if authority.country == country.upper() and sending_roles & set(authority.roles)
    )


def submitter_users(vhost: str, country: str, authorities: Sequence[str]) -> dict[str, str]:
    """RabbitMQ user → the authority it submits for (one user per authority)."""
    return {submitter_user(vhost, country, authority): authority for authority in authorities}


def subscriptions(agreement: Agreement, country: str) -> dict[str, tuple[str, ...]]:
    """Each subscribing authority of `country` → the delivery binding keys of its queue.

    The operator's topology decides what reaches a subscriber, not the subscriber: every type its
    role may receive under the agreement. A consulate gets the workers of its own country
    (`worker.death.TJ`) and the notices about no particular worker (`legislation.change.-`); a
    ministry gets every citizenship (`worker.death.*`).
    """
    found: dict[str, tuple[str, ...]] = {}
    for authority in agreement.authorities:
        if authority.country != country.upper():
            continue
        roles = set(authority.roles)
        allowed = [rule.type for rule in agreement.rules if roles & set(rule.subscribers)]
        if not allowed:
            continue
        citizenships = (authority.country, "-") if "consulate" in roles else ("*",)
        found[authority.id] = tuple(f"{kind}.{who}" for kind in allowed for who in citizenships)
    return found
