"""`broker topology apply|show`: set up and inspect the RabbitMQ side of one bilateral link.

In development both countries are vhosts of the local node, so one `apply` sets up both. In
production each operator runs `apply --local <own country>` on their own broker, with the peer's
broker URL and a secrets file holding the link passwords agreed with the peer.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from broker.core.errors import ExchangeError
from broker.exchange import provisioning
from broker.exchange.rabbit_admin import RabbitAdmin
from broker.exchange.topology import check_message_size_limits
from broker.state.settings import DEFAULT_MAX_MESSAGE_BYTES

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
        plans = provisioning.plans_for(
            provisioning.parse_brokers(broker or DEVELOPMENT_BROKERS, plaintext_hosts=plaintext_host or ()),
            local,
        )
        passwords = provisioning.load_passwords(secrets_file, provisioning.needed_users(plans))
        admin = RabbitAdmin(node=node)
        # Before changing anything: a node that refuses what the gateways accept is not worth setting up.
        limits = check_message_size_limits(
            broker_limit=admin.max_message_size(), gateway_limit=max_message_bytes
        )
        changes = asyncio.run(provisioning.apply_topology(plans=plans, passwords=passwords, admin=admin))
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
        plans = provisioning.plans_for(
            provisioning.parse_brokers(broker or DEVELOPMENT_BROKERS, plaintext_hosts=plaintext_host or ()),
            local,
        )
        report = [provisioning.describe(plan) for plan in plans]
        if status:
            admin = RabbitAdmin(node=node)
            shovels = admin.shovel_status()
            limits = provisioning.message_size_status(admin.max_message_size(), max_message_bytes)
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
