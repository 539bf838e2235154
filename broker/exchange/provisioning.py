"""Applying a topology plan: parse broker URLs, pick the local plans, passwords, provision, describe.

What `broker topology apply|show` and the development kit share; the command line only adds options.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from broker.core.agreement import Agreement, load_agreement
from broker.core.agreement_set import AgreementSet
from broker.core.errors import ConfigError, Reason, TransportError
from broker.core.tls_policy import check_amqp_url
from broker.exchange.ministries import submitting_authorities, subscriptions
from broker.exchange.plan import BrokerPlan, broker_plan
from broker.exchange.rabbit_admin import RabbitAdmin
from broker.exchange.topology import (
    OUTBOUND,
    CountryBroker,
    check_message_size_limits,
    limit_from_refusal,
    size_probes,
)
from broker.exchange.transport import RabbitTransport
from broker.exchange.transport_api import Transport
from broker.state.rabbitmq_passwords import environment_password

# Bound to no queue of `outbound`: a probe body is dropped as soon as the broker took it.
SIZE_PROBE_KEY = "size-probe"
SIZE_PROBE_TIMEOUT_S = 60.0


def parse_brokers(
    values: Sequence[str], *, plaintext_hosts: Sequence[str] = (), nodes: Sequence[str] = ()
) -> list[CountryBroker]:
    """`cc=amqp[s]://host:port/vhost` values; hosts in `plaintext_hosts` may go without TLS.

    `nodes`: `cc=host:port` values, the other nodes of a country's cluster (`--broker-node`).
    """
    allowed = {host.lower() for host in plaintext_hosts}
    cluster: dict[str, list[str]] = {}
    for value in nodes:
        country, separator, node = value.partition("=")
        if not separator:
            raise ConfigError(
                Reason.CONFIG_INVALID, f"--broker-node {value!r} must look like tj=rabbit-2.tj.example:5671"
            )
        cluster.setdefault(country.strip().lower(), []).append(node.strip())
    brokers = []
    for value in values:
        country, separator, url = value.partition("=")
        if not separator:
            raise ConfigError(
                Reason.CONFIG_INVALID, f"--broker {value!r} must look like tj=amqp://host:port/tj"
            )
        parts = urlsplit(url.strip())
        others = tuple(cluster.pop(country.strip().lower(), ()))
        for node in others:  # each node's host passes the TLS rule on its own
            check_amqp_url(
                urlunsplit((parts.scheme, node, parts.path, parts.query, "")), plaintext_hosts=allowed
            )
        brokers.append(
            CountryBroker(
                country=country.strip().lower(),
                url=url.strip(),
                allow_plaintext=(parts.hostname or "").lower() in allowed,
                nodes=others,
            )
        )
    if cluster:
        raise ConfigError(
            Reason.CONFIG_INVALID,
            f"--broker-node names a country with no --broker: {', '.join(sorted(cluster))}",
        )
    countries = [broker.country for broker in brokers]
    if len(brokers) < 2 or len(set(countries)) != len(countries):
        raise ConfigError(
            Reason.CONFIG_INVALID, "a link needs two brokers or more, each of a different country"
        )
    return brokers


def plans_for(
    brokers: Sequence[CountryBroker],
    local: Sequence[str] | None,
    *,
    agreement: Agreement | None = None,
    agreements: Sequence[Agreement] = (),
) -> list[BrokerPlan]:
    """The plans of the `local` brokers (all without it), with a submitting user per ministry and a
    subscribing user and queue per subscriber of `agreement` (default: the shipped one). With
    `agreements` (several pairs of countries), each broker links only to the countries it shares an
    agreement with, and its ministries and subscribers are those of its own agreements."""
    agreement = agreement or load_agreement()
    wanted = {country.lower() for country in local} if local else {broker.country for broker in brokers}
    unknown = wanted - {broker.country for broker in brokers}
    if unknown:
        raise ConfigError(
            Reason.CONFIG_INVALID, f"--local names countries without a --broker: {sorted(unknown)}"
        )
    plans = []
    for broker in brokers:
        if broker.country not in wanted:
            continue
        if not agreements:
            peers = [peer for peer in brokers if peer is not broker]
            submitters = submitting_authorities(agreement, broker.country.upper())
            subscribers = subscriptions(agreement, broker.country)
        else:
            country = broker.country.upper()
            own = AgreementSet([a for a in agreements if country in a.countries], country=country)
            peers = [peer for peer in brokers if peer.country.upper() in own.peers]
            submitters = submitting_authorities(own, country)
            subscribers = subscriptions(own, country)
        plans.append(broker_plan(broker, peers, submitters=submitters, subscribers=subscribers))
    return plans


def needed_users(plans: Sequence[BrokerPlan]) -> list[str]:
    users = [user for plan in plans for user in plan.users]
    users += [user for plan in plans for shovel in plan.shovels for user in shovel.users]
    return sorted(set(users))


def read_passwords(path: Path) -> dict[str, str]:
    """The secrets file's user passwords (a JSON object, user → password); none when it does not exist."""
    if not path.exists():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            Reason.INPUT_UNREADABLE, f"cannot read the secrets file {path}: {exc.strerror}"
        ) from None
    try:
        return {str(k): str(v) for k, v in json.loads(text).items()}
    except (ValueError, AttributeError) as exc:
        raise ConfigError(Reason.CONFIG_INVALID, f"{path} is not a JSON object of user passwords") from exc


def load_passwords(
    path: Path, users: Sequence[str], environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Each user's password: from its RABBITMQ_PASSWORD_<USER> variable, else the secrets file;
    users with neither get a generated one, kept in the file (private to the owner). Passwords from
    the environment are never written to the file."""
    passwords = read_passwords(path)
    given = {user: found for user in users if (found := environment_password(user, environ))}
    missing = [user for user in users if user not in given and not passwords.get(user)]
    if missing:
        passwords.update({user: secrets.token_urlsafe(24) for user in missing})
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(passwords, handle, indent=2, sort_keys=True)
    return {**passwords, **given}


def password_of(user: str, path: Path) -> str | None:
    """`user`'s password from its RABBITMQ_PASSWORD_<USER> variable, else the secrets file."""
    return environment_password(user) or read_passwords(path).get(user) or None


@dataclass(frozen=True)
class Applied:
    """What `apply_plans` changed, and per vhost the node's message size limit against the gateways'."""

    changes: list[str]
    message_size: dict[str, str]


async def apply_plans(
    *,
    plans: Sequence[BrokerPlan],
    passwords: Mapping[str, str],
    admin: RabbitAdmin,
    shovel_timeout: float = 30.0,
    gateway_limit: int | None = None,
    subscriptions: bool = True,
) -> Applied:
    """Vhosts, users and permissions first, then queues, then shovels (which would create missing queues).

    With `gateway_limit` (the gateways' max_message_bytes), each vhost's node is probed after its
    queues exist and before any shovel starts: a node that refuses what the gateways accept stops
    the apply there. With `subscriptions`, each subscriber's queue is declared and bound as well
    (the development kit leaves that to its tests, which choose their own bindings).
    """
    changes: list[str] = []
    limits: dict[str, str] = {}
    for plan in plans:
        changes += await asyncio.to_thread(admin.provision, plan, passwords)
    for plan in plans:
        transport = await _gateway_transport(plan, passwords, "topology-apply")
        try:
            await transport.declare(plan.declarations)
            if subscriptions:
                await transport.declare(plan.subscriptions)
            if gateway_limit is not None:
                limits[plan.vhost] = await probe_message_size(transport, gateway_limit)
        finally:
            await transport.close()
    for plan in plans:
        changes += await asyncio.to_thread(admin.start_shovels, plan, passwords, timeout=shovel_timeout)
    return Applied(changes=changes, message_size=limits)


async def apply_topology(
    *,
    plans: Sequence[BrokerPlan],
    passwords: Mapping[str, str],
    admin: RabbitAdmin,
    shovel_timeout: float = 30.0,
) -> list[str]:
    """`apply_plans` without the message size probe and the subscribers' queues (the development
    kit's tests declare those with the bindings they test); returns what changed."""
    applied = await apply_plans(
        plans=plans, passwords=passwords, admin=admin, shovel_timeout=shovel_timeout, subscriptions=False
    )
    return applied.changes


async def _gateway_transport(plan: BrokerPlan, passwords: Mapping[str, str], purpose: str) -> RabbitTransport:
    gateway = plan.broker.gateway_user
    return await RabbitTransport.connect(
        url=plan.broker.uri_for(user=gateway, password=_password(passwords, gateway)),
        name=f"{purpose}-{plan.vhost}",
    )


async def probe_message_size(transport: Transport, gateway_limit: int) -> str:
    """The node's max_message_size against the gateways', found by publishing bodies it must take.

    RabbitMQ's management API does not report max_message_size, so the node is asked the only way
    that counts: a body of the gateways' limit plus headroom must be taken, and one of twice the
    limit should be refused (a refusal names the node's limit). The bodies go to the `outbound`
    exchange under a key no queue is bound to, so the broker drops them once it took them.
    """
    smallest, over_twice = size_probes(gateway_limit)
    limit = await _refusal_limit(transport, smallest)
    if limit is None:
        limit = await _refusal_limit(transport, over_twice)
        if limit is None:
            return check_message_size_limits(broker_limit=None, gateway_limit=gateway_limit)
    return check_message_size_limits(broker_limit=limit, gateway_limit=gateway_limit)


async def _refusal_limit(transport: Transport, size: int) -> int | None:
    """None when the node took a body of `size` bytes; else the limit it named when refusing it."""
    try:
        await transport.publish(
            exchange=OUTBOUND,
            routing_key=SIZE_PROBE_KEY,
            body=bytes(size),
            message_id=SIZE_PROBE_KEY,
            timeout=SIZE_PROBE_TIMEOUT_S,
            mandatory=False,
        )
    except TransportError as error:
        limit = limit_from_refusal(error.diagnostic)
        if limit is None:
            raise
        return limit
    return None


async def message_size_status(
    plan: BrokerPlan, passwords: Mapping[str, str], gateway_limit: int
) -> dict[str, Any]:
    """The node's limit against the gateways', for `show --status` (a mismatch is shown, not raised)."""
    transport = await _gateway_transport(plan, passwords, "topology-show")
    try:
        verdict = await probe_message_size(transport, gateway_limit)
    except ConfigError as error:
        verdict = f"error: {error}"
    finally:
        await transport.close()
    return {"gateway_max_message_bytes": gateway_limit, "verdict": verdict}


def describe(plan: BrokerPlan) -> dict[str, Any]:
    """The plan as JSON, with every password masked."""
    masked: defaultdict[str, str] = defaultdict(lambda: "********")
    return {
        "country": plan.broker.country,
        "vhost": plan.vhost,
        "users": list(plan.users),
        "subscribers": dict(plan.subscribers),
        "permissions": [vars(permission) for permission in plan.permissions],
        "exchanges": {exchange.name: str(exchange.kind) for exchange in plan.declarations.exchanges},
        "queues": {queue.name: queue.argument_map() for queue in plan.declarations.queues},
        "bindings": [vars(binding) for binding in plan.declarations.bindings],
        "subscriptions": {
            queue.name: [b.routing_key for b in plan.subscriptions.bindings if b.queue == queue.name]
            for queue in plan.subscriptions.queues
        },
        "shovels": {shovel.name: shovel.definition(masked) for shovel in plan.shovels},
        "policies": {
            policy.name: {
                "pattern": policy.pattern,
                "apply-to": policy.apply_to,
                "priority": policy.priority,
                "definition": policy.definition_map(),
            }
            for policy in plan.policies
        },
    }


def _password(passwords: Mapping[str, str], user: str) -> str:
    try:
        return passwords[user]
    except KeyError:
        raise ConfigError(Reason.CONFIG_INVALID, f"no password for RabbitMQ user {user}") from None


def remove_plans(plans: Sequence[BrokerPlan], *, admin: RabbitAdmin) -> list[str]:
    """Delete the plans' vhosts (with their queues, policies and shovels) and users that exist."""
    removed = [f"vhost {plan.vhost}" for plan in plans if admin.delete_vhost(plan.vhost)]
    return removed + [f"user {user}" for user in needed_users(plans) if admin.delete_user(user)]
