"""`broker subscribe`: a subscriber's durable queue and its alerts (a consulate's death and cancellation notices)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from broker.cli.common import ConfigOption, declared_subscription, exit_with, load_settings, run, serve_alerts
from broker.cli.output import console, err_console
from broker.core.errors import ConfigError, Reason
from broker.state.private_files import open_private


def subscribe(
    authority: Annotated[str, typer.Option("--as", help="subscriber authority id, e.g. TJ-CONSULATE-MOSCOW")],
    types: Annotated[str, typer.Option("--types", help="comma-separated message types")],
    citizenship: Annotated[
        str | None, typer.Option("--citizenship", help="only workers of this country")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of readable text")] = False,
    count: Annotated[int | None, typer.Option("--count", help="stop after this many alerts")] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="append each alert to this file as a JSON line, on disk before it is acknowledged"
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Declare this subscriber's durable queue and print (or file) its alerts as they arrive.

    An alert is acknowledged only after it was printed, or written and synced to `--out`: a crash in
    between delivers it again (each line carries the message id, so a reader can skip a repeat).
    """
    from broker.exchange.subscriber import Alert, HandledLedger  # noqa: PLC0415

    country = authority.split("-", 1)[0]
    settings = load_settings(country, config)
    wanted = [t.strip() for t in types.split(",") if t.strip()]
    if out is not None:
        try:  # before connecting: a file we cannot write would hold every alert unacknowledged
            os.close(open_private(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND))
        except OSError as exc:
            exit_with(ConfigError(Reason.CONFIG_INVALID, f"cannot write alerts to {out}: {exc.strerror}"))

    async def show(alert: Alert) -> None:
        if out is not None:
            append_durably(out, json.dumps(alert.as_json(), ensure_ascii=False) + "\n")
        elif as_json:
            sys.stdout.write(json.dumps(alert.as_json(), ensure_ascii=False) + "\n")
            sys.stdout.flush()
        else:
            console.print(f"[bold]{alert.message_type}[/bold] {alert.message_id}: {alert.headline()}")

    async def go() -> None:
        async with declared_subscription(
            settings,
            authority=authority,
            types=wanted,
            citizenship=citizenship.upper() if citizenship else None,
            ledger=HandledLedger(settings.country_state_dir / f"subscriber-{authority}.sqlite"),
        ) as subscription:
            whose = f"; {citizenship.upper()} nationals only" if citizenship else ""
            where = f", appended to {out}" if out is not None else ""
            err_console.print(
                f"waiting for alerts for {authority} ({', '.join(wanted)}{whose}) on queue "
                f"{subscription.queue}{where}; Ctrl-C stops",
                markup=False,
                highlight=False,
            )
            await serve_alerts(subscription, show, count=count)

    run(go)


def append_durably(path: Path, line: str) -> None:
    """Append `line` and make it durable (fsync) before returning; the file is private (0600)."""
    descriptor = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(descriptor, line.encode("utf-8"))
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
