"""`broker topology apply|show|remove`: set up, inspect and take down the RabbitMQ side of a link.

In development both countries are vhosts of the local node, so one `apply` sets up both. In
production each operator runs `apply --local <own country>` against their own broker's management
API (RABBITMQ_ADMIN_URL/USER/PASSWORD or `--admin-credentials`), from any host that reaches it, with
the peer's broker URL and a secrets file holding the link passwords agreed with the peer.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from broker.cli.common import JsonOption, exit_with
from broker.cli.logs import configure_logging
from broker.cli.output import print_json
from broker.core.agreement import Agreement, load_agreement, load_shipped_agreement, shipped_agreement_ids
from broker.core.agreement_set import is_agreement_path
from broker.core.errors import ConfigError, ExchangeError, LocalError, Reason
from broker.exchange import provisioning
from broker.exchange.management_api import ENV_CA_FILE, ENV_PASSWORD, ENV_URL, ENV_USER, ManagementEndpoint
from broker.exchange.plan import BrokerPlan
from broker.exchange.rabbit_admin import RabbitAdmin
from broker.state.rabbitmq_passwords import environment_password
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
NodeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--broker-node",
        help="COUNTRY=host:port, another node of that country's RabbitMQ cluster; once per node. "
        "Shovels then list every node.",
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
AdminCredentialsOption = Annotated[
    Path | None,
    typer.Option(
        "--admin-credentials",
        help=f"JSON file with the management API's url, user, password and ca_file (default: the "
        f"{ENV_URL}, {ENV_USER}, {ENV_PASSWORD} and {ENV_CA_FILE} variables; http://127.0.0.1:15672 "
        "as guest when none is set).",
    ),
]
MaxMessageOption = Annotated[
    int,
    typer.Option(
        "--max-message-bytes",
        help="The gateways' max_message_bytes: the node's max_message_size is checked against it.",
    ),
]
AgreementOption = Annotated[
    list[str] | None,
    typer.Option(
        "--agreement",
        help="An agreement file (or shipped id) deciding which countries are linked, with more than two "
        "--broker; the shipped agreements count too. Repeatable.",
    ),
]
PlaintextOption = Annotated[
    list[str] | None,
    typer.Option(
        "--plaintext-host",
        help="A non-local broker host reached with plain amqp:// (a private network only); once per host.",
    ),
]


def _plans(
    broker: list[str] | None,
    local: list[str] | None,
    plaintext_host: list[str] | None,
    agreement: list[str] | None = None,
    broker_node: list[str] | None = None,
) -> list[BrokerPlan]:
    """Two brokers: one link. More (a country with several peers): a link between each two countries
    that share an agreement, the shipped ones and those `--agreement` names (files or ids)."""
    brokers = provisioning.parse_brokers(
        broker or DEVELOPMENT_BROKERS, plaintext_hosts=plaintext_host or (), nodes=broker_node or ()
    )
    if len(brokers) == 2 and not agreement:
        return provisioning.plans_for(brokers, local)
    countries = {b.country.upper() for b in brokers}
    named = [_agreement(entry) for entry in agreement or ()]
    ids = {a.id for a in named}
    known = [*named, *(a for a in map(load_shipped_agreement, shipped_agreement_ids()) if a.id not in ids)]
    return provisioning.plans_for(
        brokers, local, agreements=[a for a in known if set(a.countries) <= countries]
    )


def _agreement(entry: str) -> Agreement:
    return load_agreement(Path(entry)) if is_agreement_path(entry) else load_shipped_agreement(entry)


def _admin(credentials: Path | None, plaintext_host: list[str] | None) -> RabbitAdmin:
    return RabbitAdmin(
        ManagementEndpoint.configure(credentials_file=credentials, plaintext_hosts=plaintext_host or ())
    )


@topology_app.command("apply")
def apply_command(
    broker: BrokerOption = None,
    broker_node: NodeOption = None,
    local: LocalOption = None,
    secrets_file: SecretsOption = DEFAULT_SECRETS,
    admin_credentials: AdminCredentialsOption = None,
    plaintext_host: PlaintextOption = None,
    agreement: AgreementOption = None,
    max_message_bytes: MaxMessageOption = DEFAULT_MAX_MESSAGE_BYTES,
) -> None:
    """Create or update everything; running it again changes nothing."""
    configure_logging(level=logging.WARNING)  # the changes are printed; stdout stays the report
    try:
        plans = _plans(broker, local, plaintext_host, agreement, broker_node)
        users = provisioning.needed_users(plans)
        with _admin(admin_credentials, plaintext_host) as admin:
            _refuse_to_replace_live_passwords(secrets_file, users, admin)
            passwords = provisioning.load_passwords(secrets_file, users)
            # The node's message size limit is probed before any shovel starts: a node that refuses
            # what the gateways accept stops the apply there.
            applied = asyncio.run(
                provisioning.apply_plans(
                    plans=plans, passwords=passwords, admin=admin, gateway_limit=max_message_bytes
                )
            )
    except ExchangeError as error:
        exit_with(error)
    for vhost, verdict in applied.message_size.items():
        typer.echo(f"{vhost}: {verdict}")
    for change in applied.changes:
        typer.echo(change)
    count = len(applied.changes)
    typer.echo(f"topology of {', '.join(plan.vhost for plan in plans)} applied ({count} changes)")


def _refuse_to_replace_live_passwords(secrets_file: Path, users: list[str], admin: RabbitAdmin) -> None:
    """A user the broker already has, with no password in the file or the environment, would get a
    new generated one: a mistyped --secrets path would lock every running gateway and ministry out."""
    known = provisioning.read_passwords(secrets_file)
    unknown = {user for user in users if not known.get(user) and not environment_password(user)}
    live = sorted(unknown & set(admin.users()))
    if live:
        raise ConfigError(
            Reason.CONFIG_INVALID,
            f"{secrets_file} holds no password for {', '.join(live[:3])}{' ...' if len(live) > 3 else ''}, "
            "which the broker already has: a new one would lock out whoever uses it. Give the secrets file "
            "`topology apply` wrote, or remove those users first (`broker topology remove`)",
        )


@topology_app.command("show")
def show_command(
    broker: BrokerOption = None,
    broker_node: NodeOption = None,
    local: LocalOption = None,
    status: Annotated[
        bool,
        typer.Option("--status", help="Add shovel states, queue depths and the node's message size limit."),
    ] = False,
    as_json: JsonOption = False,
    secrets_file: SecretsOption = DEFAULT_SECRETS,
    admin_credentials: AdminCredentialsOption = None,
    plaintext_host: PlaintextOption = None,
    agreement: AgreementOption = None,
    max_message_bytes: MaxMessageOption = DEFAULT_MAX_MESSAGE_BYTES,
) -> None:
    """Print the planned topology (passwords masked), and optionally its live state; `--json` for scripts."""
    configure_logging(level=logging.WARNING)  # stdout is the report
    try:
        plans = _plans(broker, local, plaintext_host, agreement, broker_node)
        report = [provisioning.describe(plan) for plan in plans]
        if status:
            with _admin(admin_credentials, plaintext_host) as admin:
                for entry, plan in zip(report, plans, strict=True):
                    entry.update(_live_state(admin, plan, secrets_file, max_message_bytes))
    except ExchangeError as error:
        exit_with(error)
    if as_json:
        print_json(report)
        return
    for entry in report:
        _print_summary(entry)


def _print_summary(entry: dict[str, Any]) -> None:
    """One vhost's plan (and live state) in a few lines a person reads."""
    shovel_state = entry.get("shovel_status", {})
    counts = entry.get("queue_counts", {})
    lines = [
        f"{entry['country'].upper()}: vhost {entry['vhost']}",
        f"  users: {', '.join(entry['users'])}",
        "  queues: "
        + ", ".join(
            name + (f" ({counts[name]['messages']} waiting)" if name in counts else "")
            for name in entry["queues"]
        ),
        "  shovels: "
        + ", ".join(
            name + (f" ({shovel_state.get(name, 'absent')})" if "shovel_status" in entry else "")
            for name in entry["shovels"]
        ),
        "  subscribers: "
        + ", ".join(_subscriber(a, u, counts) for a, u in entry.get("subscribers", {}).items()),
    ]
    if "message_size" in entry:
        lines.append(f"  message size: {entry['message_size'].get('verdict')}")
    typer.echo("\n".join(lines))


def _subscriber(authority: str, user: str, counts: dict[str, Any]) -> str:
    queue = f"sub.{authority}"
    waiting = f", {counts[queue]['messages']} waiting" if queue in counts else ""
    return f"{queue} (consumed as {user}{waiting})"


@topology_app.command("remove")
def remove_command(
    broker: BrokerOption = None,
    broker_node: NodeOption = None,
    local: LocalOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
    admin_credentials: AdminCredentialsOption = None,
    plaintext_host: PlaintextOption = None,
    agreement: AgreementOption = None,
) -> None:
    """Delete the plan's vhosts (their queues, shovels and policies go with them) and users.

    For taking a link out of service or clearing a trial set-up; messages still in its queues are lost
    with it (the audit logs and outboxes on disk are not touched).
    """
    configure_logging(level=logging.WARNING)
    try:
        plans = _plans(broker, local, plaintext_host, agreement, broker_node)
        vhosts = [plan.vhost for plan in plans]
        if not yes and not sys.stdin.isatty():
            # typer.confirm would read end-of-file and report "interrupted" (exit 130).
            raise LocalError(
                Reason.CLI_USAGE, f"not removing vhosts {', '.join(vhosts)} without --yes: no terminal to ask"
            )
        if not yes and not typer.confirm(f"Delete vhosts {', '.join(vhosts)} and their users?"):
            typer.echo("nothing removed")
            raise typer.Exit(1)
        with _admin(admin_credentials, plaintext_host) as admin:
            removed = provisioning.remove_plans(plans, admin=admin)
    except ExchangeError as error:
        exit_with(error)
    for thing in removed:
        typer.echo(f"removed {thing}")
    typer.echo(f"topology of {', '.join(vhosts)} removed ({len(removed)} objects)")


def _live_state(
    admin: RabbitAdmin, plan: BrokerPlan, secrets_file: Path, gateway_limit: int
) -> dict[str, Any]:
    shovels = admin.shovel_status()
    state: dict[str, Any] = {
        # Only the highest-priority policy applies: shows whether quarantine's limit is in force.
        "queue_policies": admin.queue_policies(plan.vhost),
        "shovel_status": {s.name: s.state for s in shovels if s.vhost == plan.vhost},
        "queue_counts": {
            name: {"messages": messages, "consumers": consumers}
            for name, (messages, consumers) in admin.queue_counts(plan.vhost).items()
        },
    }
    # The limit is probed over AMQP as the gateway, whose password only the secrets file knows.
    password = provisioning.password_of(plan.broker.gateway_user, secrets_file)
    if password is not None:
        passwords = {plan.broker.gateway_user: password}
        state["message_size"] = asyncio.run(provisioning.message_size_status(plan, passwords, gateway_limit))
    else:
        state["message_size"] = {
            "verdict": f"unknown: no password of {plan.broker.gateway_user} in {secrets_file}"
        }
    return state
