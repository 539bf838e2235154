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
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from broker.core.agreement import Agreement, load_agreement
from broker.core.errors import ConfigError, Reason
from broker.exchange.rabbit_admin import RabbitAdmin
from broker.exchange.topology import (
    BrokerPlan,
    CountryBroker,
    broker_plan,
    check_message_size_limits,
    submitting_authorities,
)
from broker.exchange.transport import RabbitTransport


def parse_brokers(values: Sequence[str], *, plaintext_hosts: Sequence[str] = ()) -> list[CountryBroker]:
    """`cc=amqp[s]://host:port/vhost` values; hosts in `plaintext_hosts` may go without TLS."""
    allowed = {host.lower() for host in plaintext_hosts}
    brokers = []
    for value in values:
        country, separator, url = value.partition("=")
        if not separator:
            raise ConfigError(
                Reason.CONFIG_INVALID, f"--broker {value!r} must look like tj=amqp://host:port/tj"
            )
        host = (urlsplit(url.strip()).hostname or "").lower()
        brokers.append(
            CountryBroker(country=country.strip().lower(), url=url.strip(), allow_plaintext=host in allowed)
        )
    if len(brokers) != 2 or brokers[0].country == brokers[1].country:
        raise ConfigError(
            Reason.CONFIG_INVALID, "a link needs exactly two brokers of two different countries"
        )
    return brokers


def plans_for(
    brokers: Sequence[CountryBroker], local: Sequence[str] | None, *, agreement: Agreement | None = None
) -> list[BrokerPlan]:
    """The plans of the `local` brokers (all without it), with a submitting user per ministry of
    `agreement` (default: the shipped one)."""
    agreement = agreement or load_agreement()
    wanted = {country.lower() for country in local} if local else {broker.country for broker in brokers}
    unknown = wanted - {broker.country for broker in brokers}
    if unknown:
        raise ConfigError(
            Reason.CONFIG_INVALID, f"--local names countries without a --broker: {sorted(unknown)}"
        )
    return [
        broker_plan(
            broker,
            [peer for peer in brokers if peer is not broker],
            submitters=submitting_authorities(agreement, broker.country),
        )
        for broker in brokers
        if broker.country in wanted
    ]


def needed_users(plans: Sequence[BrokerPlan]) -> list[str]:
    users = [user for plan in plans for user in plan.users]
    users += [user for plan in plans for shovel in plan.shovels for user in shovel.users]
    return sorted(set(users))


def read_passwords(path: Path) -> dict[str, str]:
    """The secrets file `broker topology apply` writes: a JSON object, RabbitMQ user → password."""
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


def load_passwords(path: Path, users: Sequence[str]) -> dict[str, str]:
    """Read the secrets file, generating passwords for users it lacks (kept private to the owner)."""
    passwords = read_passwords(path) if path.exists() else {}
    missing = [user for user in users if not passwords.get(user)]
    if missing:
        passwords.update({user: secrets.token_urlsafe(24) for user in missing})
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(passwords, handle, indent=2, sort_keys=True)
    return passwords


async def apply_topology(
    *,
    plans: Sequence[BrokerPlan],
    passwords: Mapping[str, str],
    admin: RabbitAdmin,
    shovel_timeout: float = 30.0,
) -> list[str]:
    """Vhosts, users and permissions first, then queues, then shovels (which would create missing queues)."""
    changes: list[str] = []
    for plan in plans:
        changes += await asyncio.to_thread(admin.provision, plan, passwords)
    for plan in plans:
        gateway = plan.broker.gateway_user
        transport = await RabbitTransport.connect(
            url=plan.broker.uri_for(user=gateway, password=passwords[gateway]),
            name=f"topology-apply-{plan.vhost}",
        )
        try:
            await transport.declare(plan.declarations)
        finally:
            await transport.close()
    for plan in plans:
        changes += await asyncio.to_thread(admin.start_shovels, plan, passwords, timeout=shovel_timeout)
    return changes


def describe(plan: BrokerPlan) -> dict[str, Any]:
    """The plan as JSON, with every password masked."""
    masked: defaultdict[str, str] = defaultdict(lambda: "********")
    return {
        "country": plan.broker.country,
        "vhost": plan.vhost,
        "users": list(plan.users),
        "permissions": [vars(permission) for permission in plan.permissions],
        "exchanges": {exchange.name: str(exchange.kind) for exchange in plan.declarations.exchanges},
        "queues": {queue.name: queue.argument_map() for queue in plan.declarations.queues},
        "bindings": [vars(binding) for binding in plan.declarations.bindings],
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


def message_size_status(broker_limit: int, gateway_limit: int) -> dict[str, Any]:
    """The node's limit against the gateways', for `show --status` (a mismatch is shown, not raised)."""
    try:
        verdict = check_message_size_limits(broker_limit=broker_limit, gateway_limit=gateway_limit)
    except ConfigError as error:
        verdict = f"error: {error}"
    return {
        "broker_max_message_size": broker_limit,
        "gateway_max_message_bytes": gateway_limit,
        "verdict": verdict,
    }
