"""`broker gateway|send|status`: run a country's gateway, send through it, follow a message."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import typer
from rich.table import Table

from broker.cli.common import ConfigOption, CountryOption, console, err_console, load_settings, run
from broker.core.catalogue import parse_payload


def gateway(country: CountryOption, config: ConfigOption = None) -> None:
    """Run this country's gateway until interrupted."""
    from broker.exchange import runtime  # noqa: PLC0415
    from broker.exchange.gateway import Gateway  # noqa: PLC0415 - keeps `broker keys` free of aio-pika start-up

    settings = load_settings(country, config)
    runtime.use_fast_event_loop()

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with Gateway.from_settings(settings) as gw:
            runtime.tune_for_long_run()
            if settings.metrics_port:
                gw.metrics.serve(settings.metrics_port)
            console.print(f"gateway {gw.gateway_id} running; peer {gw.peer_gateway_id}. Ctrl-C stops.")
            await stop.wait()

    run(serve)


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
    from broker.exchange.gateway import Gateway  # noqa: PLC0415

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


def status(
    message_id: Annotated[UUID, typer.Argument(help="message id")],
    country: CountryOption,
    config: ConfigOption = None,
) -> None:
    """The trail of one message: outbox state and every audit entry that names it."""
    from broker.exchange.gateway import open_audit_store  # noqa: PLC0415
    from broker.state.outbox import Outbox  # noqa: PLC0415

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
