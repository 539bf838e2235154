"""`broker topology apply|show`: set up and inspect the RabbitMQ side of one bilateral link.

In development both countries are vhosts of the local node, so one `apply` sets up both. In
production each operator runs `apply --local <own country>` on their own broker, with the peer's
broker URL and a secrets file holding the link passwords agreed with the peer.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from broker.errors import ConfigError, ExchangeError, Reason
from broker.rabbit_admin import RabbitAdmin
from broker.settings import DEFAULT_MAX_MESSAGE_BYTES
from broker.topology import BrokerPlan, CountryBroker, broker_plan, check_message_size_limits
from broker.transport import RabbitTransport

topology_app = typer.Typer(help="RabbitMQ vhosts, users, queues and shovel links between the two countries.")

DEVELOPMENT_BROKERS = ("tj=amqp://127.0.0.1:5672/tj", "ru=amqp://127.0.0.1:5672/ru")
DEFAULT_SECRETS = Path("var/rabbitmq-secrets.json")

BrokerOption = Annotated[
    list[str] | None,
    typer.Option(
        "--broker", help="COUNTRY=amqp://host:port/vhost, once per country (default: both on localhost)."
    ),
]
LocalOption = Annotated[
    list[str] | None,
    typer.Option(
        "--local", help="Country whose broker this host administers (default: all, as in development)."
    ),
]
SecretsOption = Annotated[
    Path, typer.Option("--secrets", help="JSON file of RabbitMQ user passwords; missing ones are generated.")
]
NodeOption = Annotated[str | None, typer.Option("--node", help="RabbitMQ node name for rabbitmqctl.")]
MaxMessageOption = Annotated[
    int,
    typer.Option(
        "--max-message-bytes",
        help="The gateways' max_message_bytes: the node's max_message_size is checked against it.",
    ),
]
PlaintextOption = Annotated[
    list[str] | None,
    typer.Option(
        "--plaintext-host",
        help="A non-local broker host reached with plain amqp:// (a private network only); once per host.",
    ),
]


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


def plans_for(brokers: Sequence[CountryBroker], local: Sequence[str] | None) -> list[BrokerPlan]:
    wanted = {country.lower() for country in local} if local else {broker.country for broker in brokers}
    unknown = wanted - {broker.country for broker in brokers}
    if unknown:
        raise ConfigError(
            Reason.CONFIG_INVALID, f"--local names countries without a --broker: {sorted(unknown)}"
        )
    return [
        broker_plan(broker, [peer for peer in brokers if peer is not broker])
        for broker in brokers
        if broker.country in wanted
    ]


def needed_users(plans: Sequence[BrokerPlan]) -> list[str]:
    users = [user for plan in plans for user in plan.users]
    users += [user for plan in plans for shovel in plan.shovels for user in shovel.users]
    return sorted(set(users))


def load_passwords(path: Path, users: Sequence[str]) -> dict[str, str]:
    """Read the secrets file, generating passwords for users it lacks (kept private to the owner)."""
    passwords: dict[str, str] = {}
    if path.exists():
        try:
            passwords = {str(k): str(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
        except (ValueError, AttributeError) as exc:
            raise ConfigError(
                Reason.CONFIG_INVALID, f"{path} is not a JSON object of user passwords"
            ) from exc
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


@topology_app.command("apply")
def apply_command(
    broker: BrokerOption = None,
    local: LocalOption = None,
    secrets_file: SecretsOption = DEFAULT_SECRETS,
    node: NodeOption = None,
    plaintext_host: PlaintextOption = None,
    max_message_bytes: MaxMessageOption = DEFAULT_MAX_MESSAGE_BYTES,
) -> None:
    """Create or update everything; running it again changes nothing."""
    try:
        plans = plans_for(
            parse_brokers(broker or DEVELOPMENT_BROKERS, plaintext_hosts=plaintext_host or ()), local
        )
        passwords = load_passwords(secrets_file, needed_users(plans))
        admin = RabbitAdmin(node=node)
        # Before changing anything: a node that refuses what the gateways accept is not worth setting up.
        limits = check_message_size_limits(
            broker_limit=admin.max_message_size(), gateway_limit=max_message_bytes
        )
        changes = asyncio.run(apply_topology(plans=plans, passwords=passwords, admin=admin))
    except ExchangeError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=1) from error
    typer.echo(limits)
    for change in changes:
        typer.echo(change)
    typer.echo(f"topology of {', '.join(plan.vhost for plan in plans)} applied ({len(changes)} changes)")


@topology_app.command("show")
def show_command(
    broker: BrokerOption = None,
    local: LocalOption = None,
    status: Annotated[bool, typer.Option("--status", help="Add shovel states and queue depths.")] = False,
    node: NodeOption = None,
    plaintext_host: PlaintextOption = None,
    max_message_bytes: MaxMessageOption = DEFAULT_MAX_MESSAGE_BYTES,
) -> None:
    """Print the planned topology as JSON (passwords masked), and optionally its live state."""
    try:
        plans = plans_for(
            parse_brokers(broker or DEVELOPMENT_BROKERS, plaintext_hosts=plaintext_host or ()), local
        )
        report = [describe(plan) for plan in plans]
        if status:
            admin = RabbitAdmin(node=node)
            shovels = admin.shovel_status()
            limits = message_size_status(admin.max_message_size(), max_message_bytes)
            for entry, plan in zip(report, plans, strict=True):
                entry["message_size"] = limits
                # Only the highest-priority policy applies: shows whether quarantine's limit is in force.
                entry["queue_policies"] = admin.queue_policies(plan.vhost)
                entry["shovel_status"] = {s.name: s.state for s in shovels if s.vhost == plan.vhost}
                entry["queue_counts"] = {
                    name: {"messages": messages, "consumers": consumers}
                    for name, (messages, consumers) in admin.queue_counts(plan.vhost).items()
                }
    except ExchangeError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=1) from error
    typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
