"""`broker`: one command for keys, topology, gateways, sending, subscribing, status, quarantine, demo."""

from __future__ import annotations

import typer

from broker.cli.adapt import adapt_app
from broker.cli.audit import audit_app
from broker.cli.demo import demo
from broker.cli.gateway import gateway, send, status
from broker.cli.keys import keys_app
from broker.cli.quarantine import quarantine_app
from broker.cli.subscribe import subscribe
from broker.cli.topology import topology_app

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(
    keys_app, name="keys", help="Country CAs, authority certificates, rotation, revocation, trust bundles"
)
app.add_typer(topology_app, name="topology", help="RabbitMQ vhosts, users, queues and shovel links")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(audit_app, name="audit")
app.add_typer(adapt_app, name="adapt")
for command in (gateway, send, subscribe, status, demo):
    app.command()(command)

__all__ = ["app"]
