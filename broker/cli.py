"""`broker`: one command for keys, topology, gateways, sending, subscribing, status, quarantine, demo."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar
from uuid import UUID

import typer
from rich.console import Console
from rich.table import Table

from broker.catalogue import parse_payload
from broker.cli_adapt import adapt_app
from broker.cli_audit import audit_app
from broker.cli_common import ConfigOption, err_console, load_settings, run, serve_alerts
from broker.cli_keys import keys_app
from broker.cli_topology import topology_app
from broker.logs import configure_logging

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(
    keys_app, name="keys", help="Country CAs, authority certificates, rotation, revocation, trust bundles"
)
app.add_typer(topology_app, name="topology", help="RabbitMQ vhosts, users, queues and shovel links")
quarantine_app = typer.Typer(help="Messages rejected by this country's gateway", no_args_is_help=True)
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(audit_app, name="audit")
app.add_typer(adapt_app, name="adapt")

console = Console()
T = TypeVar("T")

CountryOption = Annotated[str, typer.Option("--country", "-c", help="TJ or RU", callback=lambda v: v.upper())]


@app.command()
def gateway(country: CountryOption, config: ConfigOption = None) -> None:
    """Run this country's gateway until interrupted."""
    from broker.gateway import Gateway  # noqa: PLC0415 - keeps `broker keys` free of aio-pika start-up

    settings = load_settings(country, config)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with Gateway.from_settings(settings) as gw:
            if settings.metrics_port:
                gw.metrics.serve(settings.metrics_port)
            console.print(f"gateway {gw.gateway_id} running; peer {gw.peer_gateway_id}. Ctrl-C stops.")
            await stop.wait()

    run(serve)


@app.command()
def send(
    country: CountryOption,
    message_type: Annotated[str, typer.Option("--type", help="e.g. worker.death")],
    file: Annotated[Path, typer.Option("--file", help="payload JSON")],
    to: Annotated[str, typer.Option("--to", help="recipient authority id, e.g. TJ-MOL")],
    sender: Annotated[
        str | None, typer.Option("--sender", help="signing authority (default: the only one allowed)")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="wait for the signed receipt")] = True,
    version: int = 1,
    config: ConfigOption = None,
) -> None:
    """Seal a payload file and send it to the peer country."""
    from broker.gateway import Gateway  # noqa: PLC0415

    settings = load_settings(country, config)
    payload = parse_payload(message_type, version, file.read_bytes())

    async def go() -> None:
        async with Gateway.from_settings(settings) as gw:
            result = await gw.send(payload, to=to, sender=sender, wait_receipt=wait)
            line: dict[str, Any] = {"message_id": str(result.message_id), "sha256": result.sha256}
            if result.receipt is not None:
                line |= {"verdict": result.receipt.verdict, "reason": result.receipt.reason}
            console.print_json(json.dumps(line))

    run(go)


@app.command()
def subscribe(
    authority: Annotated[str, typer.Option("--as", help="subscriber authority id, e.g. TJ-CONSULATE-MOSCOW")],
    types: Annotated[str, typer.Option("--types", help="comma-separated message types")],
    citizenship: Annotated[
        str | None, typer.Option("--citizenship", help="only workers of this country")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of readable text")] = False,
    count: Annotated[int | None, typer.Option("--count", help="stop after this many alerts")] = None,
    config: ConfigOption = None,
) -> None:
    """Declare this subscriber's durable queue and print its alerts."""
    from broker.agreement import load_agreement  # noqa: PLC0415
    from broker.keystore import KeyStore  # noqa: PLC0415
    from broker.subscriber import Alert, HandledLedger, Subscription  # noqa: PLC0415
    from broker.transport import RabbitTransport  # noqa: PLC0415

    country = authority.split("-", 1)[0]
    settings = load_settings(country, config)

    async def go() -> None:
        agreement = load_agreement(settings.agreement_file)
        trust = KeyStore(root=settings.keys_dir).trust_store(agreement.countries)
        transport = await RabbitTransport.connect(url=settings.amqp_url, name=f"{authority}-subscriber")
        try:
            subscription = Subscription(
                transport=transport,
                agreement=agreement,
                trust=trust,
                authority_id=authority,
                types=[t.strip() for t in types.split(",") if t.strip()],
                citizenship=citizenship.upper() if citizenship else None,
                decryptor=KeyStore(root=settings.keys_dir).decryptor(authority),
                ledger=HandledLedger(settings.country_state_dir / f"subscriber-{authority}.sqlite"),
            )
            await subscription.declare()

            async def show(alert: Alert) -> None:
                if as_json:
                    sys.stdout.write(json.dumps(alert.as_json(), ensure_ascii=False) + "\n")
                    sys.stdout.flush()
                else:
                    console.print(f"[bold]{alert.message_type}[/bold] {alert.message_id}: {alert.headline()}")

            await serve_alerts(subscription, show, count=count)
        finally:
            await transport.close()

    run(go)


@app.command()
def status(
    message_id: Annotated[UUID, typer.Argument(help="message id")],
    country: CountryOption,
    config: ConfigOption = None,
) -> None:
    """The trail of one message: outbox state and every audit entry that names it."""
    from broker.gateway import open_audit_store  # noqa: PLC0415
    from broker.outbox import Outbox  # noqa: PLC0415

    settings = load_settings(country, config)

    async def go() -> None:
        outbox = Outbox.open(settings.country_state_dir / "outbox.sqlite")
        audit = await open_audit_store(settings)
        try:
            record = await outbox.get(message_id)
            if record is not None:
                console.print(
                    f"{record.message_type} to {record.recipient}: [bold]{record.state}[/bold]"
                    f" (attempts {record.attempts}, sent {record.sent_at:%Y-%m-%d %H:%M:%S}Z"
                    + (f", reason {record.reason}" if record.reason else "")
                    + ")"
                )
            table = Table("index", "time", "kind", "type", "peer", "verdict", "reason")
            for entry in await audit.find(message_id):
                table.add_row(
                    str(entry.index),
                    entry.time.isoformat(),
                    entry.kind,
                    entry.message_type or "",
                    entry.peer or "",
                    entry.verdict or "",
                    entry.reason or "",
                )
            if record is None and table.row_count == 0:
                err_console.print(f"no trace of {message_id} in {settings.country}'s outbox or audit log")
                raise typer.Exit(1)
            console.print(table)
        finally:
            outbox.close()
            await audit.close()

    run(go)


def _with_transport(country: str, config: Path | None, action: Callable[[Any], Awaitable[T]]) -> T:
    from broker.transport import RabbitTransport  # noqa: PLC0415

    settings = load_settings(country, config)

    async def go() -> T:
        transport = await RabbitTransport.connect(url=settings.amqp_url, name=f"{country}-quarantine-cli")
        try:
            return await action(transport)
        finally:
            await transport.close()

    return run(go)


@quarantine_app.command("list")
def quarantine_list(country: CountryOption, limit: int = 100, config: ConfigOption = None) -> None:
    """List quarantined messages (they stay in the queue)."""
    from broker.topology import QUARANTINE  # noqa: PLC0415

    async def action(transport: Any) -> None:
        table = Table("message id", "reason", "rejected at", "audit index", "bytes")
        for message in await transport.peek(QUARANTINE, limit=limit):
            headers = message.headers
            table.add_row(
                message.message_id or "",
                str(headers.get("x-reason", message.death_reason or "")),
                str(headers.get("x-rejected-at", "")),
                str(headers.get("x-audit-index", "")),
                str(len(message.body)),
            )
        console.print(table)

    _with_transport(country, config, action)


@quarantine_app.command("show")
def quarantine_show(
    message_id: str,
    country: CountryOption,
    raw: Annotated[
        str | None,
        typer.Option(
            "--raw",
            help="write the exact bytes to this file (0600), or to standard output with - (not a terminal)",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Reason, diagnostic and original bytes of one quarantined message.

    The bytes are unauthenticated: control characters are shown escaped (\\x1b), never sent to the
    terminal; --raw writes them exactly, for a file or a pipe.
    """
    from broker.errors import ConfigError, Reason  # noqa: PLC0415
    from broker.private_files import write_private  # noqa: PLC0415
    from broker.terminal import visible, visible_bytes  # noqa: PLC0415
    from broker.topology import QUARANTINE  # noqa: PLC0415

    async def action(transport: Any) -> None:
        if raw == "-" and sys.stdout.isatty():
            raise ConfigError(
                Reason.CONFIG_INVALID,
                "--raw - writes the exact bytes, escape sequences included: redirect standard output "
                "to a file or a pipe, or name a file",
            )
        for message in await transport.peek(QUARANTINE, limit=10_000):
            if message.message_id == message_id:
                headers = json.dumps(
                    {k: str(v) for k, v in message.headers.items()}, ensure_ascii=False, indent=2
                )
                if raw is None:
                    sys.stdout.write(visible(headers) + "\n" + visible_bytes(message.body) + "\n")
                elif raw == "-":
                    sys.stderr.write(visible(headers) + "\n")
                    sys.stdout.buffer.write(message.body)
                    sys.stdout.flush()
                else:
                    sys.stdout.write(visible(headers) + "\n")
                    try:
                        write_private(Path(raw), message.body)
                    except OSError as exc:
                        raise ConfigError(
                            Reason.CONFIG_INVALID, f"cannot write {raw}: {exc.strerror}"
                        ) from None
                    err_console.print(
                        f"{len(message.body)} bytes written to {raw}", markup=False, highlight=False
                    )
                return
        err_console.print(
            f"{visible(message_id)} is not in {country}'s quarantine", markup=False, highlight=False
        )
        raise typer.Exit(1)

    _with_transport(country, config, action)


@quarantine_app.command("requeue")
def quarantine_requeue(message_id: str, country: CountryOption, config: ConfigOption = None) -> None:
    """Put one quarantined message back on the inbound queue (e.g. after a trust update)."""
    from broker.quarantine import requeue  # noqa: PLC0415

    async def action(transport: Any) -> None:
        await requeue(transport, message_id=message_id, country=country)
        console.print(f"requeued {message_id}")

    _with_transport(country, config, action)


@quarantine_app.command("purge")
def quarantine_purge(
    country: CountryOption,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False,
    config: ConfigOption = None,
) -> None:
    """Delete every quarantined message (the audit log keeps them)."""
    from broker.topology import QUARANTINE  # noqa: PLC0415

    if not yes and not typer.confirm(f"Purge every message in {country}'s quarantine?"):
        raise typer.Exit(1)

    async def action(transport: Any) -> None:
        console.print(f"purged {await transport.purge(QUARANTINE)} messages")

    _with_transport(country, config, action)


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="where keys and state of the demo live")] = Path("var/demo"),
) -> None:
    """A full exchange between TJ and RU on the local RabbitMQ."""
    from broker.demo import run_demo  # noqa: PLC0415

    configure_logging("console", level=30)
    ok = run(lambda: run_demo(workdir=workdir, console=console))
    raise typer.Exit(0 if ok else 1)
