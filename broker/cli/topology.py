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


@topology_app.command("apply")
def apply_command(
    broker: BrokerOption = None,
    local: LocalOption = None,
    secrets_file: SecretsOption = DEFAULT_SECRETS,
    node: NodeOption = None,
) -> None:
    """Create or update everything; running it again changes nothing."""
    try:
        plans = provisioning.plans_for(provisioning.parse_brokers(broker or DEVELOPMENT_BROKERS), local)
        passwords = provisioning.load_passwords(secrets_file, provisioning.needed_users(plans))
        changes = asyncio.run(
            provisioning.apply_topology(plans=plans, passwords=passwords, admin=RabbitAdmin(node=node))
        )
    except ExchangeError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=1) from error
    for change in changes:
        typer.echo(change)
    typer.echo(f"topology of {', '.join(plan.vhost for plan in plans)} applied ({len(changes)} changes)")


@topology_app.command("show")
def show_command(
    broker: BrokerOption = None,
    local: LocalOption = None,
    status: Annotated[bool, typer.Option("--status", help="Add shovel states and queue depths.")] = False,
    node: NodeOption = None,
) -> None:
    """Print the planned topology as JSON (passwords masked), and optionally its live state."""
    try:
        plans = provisioning.plans_for(provisioning.parse_brokers(broker or DEVELOPMENT_BROKERS), local)
        report = [provisioning.describe(plan) for plan in plans]
        if status:
            admin = RabbitAdmin(node=node)
            shovels = admin.shovel_status()
            for entry, plan in zip(report, plans, strict=True):
                entry["shovel_status"] = {s.name: s.state for s in shovels if s.vhost == plan.vhost}
                entry["queue_counts"] = {
                    name: {"messages": messages, "consumers": consumers}
                    for name, (messages, consumers) in admin.queue_counts(plan.vhost).items()
                }
    except ExchangeError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=1) from error
    typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
