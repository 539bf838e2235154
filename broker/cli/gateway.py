"""`broker gateway|send|status`: run a country's gateway, send through it, follow a message."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import typer

from broker.cli.common import (
    ConfigOption,
    CountryOption,
    JsonOption,
    exit_with,
    load_settings,
    read_input,
    run,
)
from broker.cli.output import console, print_json, print_table
from broker.core.catalogue import parse_payload
from broker.core.errors import LocalError, Reason


def gateway(country: CountryOption, config: ConfigOption = None) -> None:
    """Run this country's gateway until interrupted."""
    from broker.exchange import runtime  # noqa: PLC0415
    from broker.exchange.gateway import Gateway  # noqa: PLC0415 - keeps `broker keys` free of aio-pika start-up
    from broker.exchange.status_server import serving_status  # noqa: PLC0415

    settings = load_settings(country, config, service=True)
    runtime.use_fast_event_loop()

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with Gateway.from_settings(settings) as gw, serving_status(gw, settings) as status:
            runtime.tune_for_long_run()
            where = f"; /metrics /healthz /readyz on port {status.port}" if status else ""
            console.print(f"gateway {gw.gateway_id} running; peer {gw.peer_gateway_id}{where}. Ctrl-C stops.")
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
    payload = parse_payload(message_type, version, read_input(file, what="payload file"))

    async def go() -> None:
        async with Gateway.from_settings(settings) as gw:
            result = await gw.send(payload, to=to, sender=sender, wait_receipt=wait)
            line: dict[str, Any] = {"message_id": str(result.message_id), "sha256": result.sha256}
            if result.receipt is not None:
                line |= {"verdict": result.receipt.verdict, "reason": result.receipt.reason}
            console.print_json(json.dumps(line))

    run(go)


TRAIL_COLUMNS = ("index", "time", "kind", "type", "peer", "verdict", "reason")


def status(
    message_id: Annotated[UUID, typer.Argument(help="message id")],
    country: CountryOption,
    as_json: JsonOption = False,
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
            trail = [
                {
                    "index": entry.index,
                    "time": entry.time.isoformat(),
                    "kind": str(entry.kind),
                    "type": entry.message_type,
                    "peer": entry.peer,
                    "verdict": entry.verdict,
                    "reason": entry.reason,
                }
                for entry in await audit.find(message_id)
            ]
        finally:
            outbox.close()
            await audit.close()
        if record is None and not trail:
            exit_with(
                LocalError(
                    Reason.AUDIT_OUT_OF_RANGE,
                    f"no trace of {message_id} in {settings.country}'s outbox or audit log",
                )
            )
        sent = None
        if record is not None:
            sent = {
                "type": record.message_type,
                "recipient": record.recipient,
                "state": str(record.state),
                "attempts": record.attempts,
                "sent_at": record.sent_at.isoformat(),
                "deadline": record.deadline.isoformat(),
                "reason": record.reason,
                "receipt_at": record.receipt_at.isoformat() if record.receipt_at else None,
            }
        if as_json:
            print_json({"message_id": str(message_id), "outbox": sent, "trail": trail})
            return
        if record is not None:
            console.print(
                f"{record.message_type} to {record.recipient}: [bold]{record.state}[/bold]"
                f" (attempts {record.attempts}, sent {record.sent_at:%Y-%m-%d %H:%M:%S}Z"
                + (f", reason {record.reason}" if record.reason else "")
                + ")"
            )
        print_table(TRAIL_COLUMNS, trail)

    run(go)
