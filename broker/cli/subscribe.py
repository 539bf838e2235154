"""`broker subscribe`: a subscriber's durable queue and its alerts (a consulate's death and cancellation notices)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from broker.cli.common import ConfigOption, console, declared_subscription, load_settings, run, serve_alerts


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
    from broker.exchange.subscriber import Alert, HandledLedger  # noqa: PLC0415

    country = authority.split("-", 1)[0]
    settings = load_settings(country, config)

    async def show(alert: Alert) -> None:
        if as_json:
            sys.stdout.write(json.dumps(alert.as_json(), ensure_ascii=False) + "\n")
            sys.stdout.flush()
        else:
            console.print(f"[bold]{alert.message_type}[/bold] {alert.message_id}: {alert.headline()}")

    async def go() -> None:
        async with declared_subscription(
            settings,
            authority=authority,
            types=[t.strip() for t in types.split(",") if t.strip()],
            citizenship=citizenship.upper() if citizenship else None,
            ledger=HandledLedger(settings.country_state_dir / f"subscriber-{authority}.sqlite"),
        ) as subscription:
            await serve_alerts(subscription, show, count=count)

    run(go)
