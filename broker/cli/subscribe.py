"""`broker subscribe`: a subscriber's durable queue and its alerts (a consulate's death and cancellation notices)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from broker.cli.common import ConfigOption, console, load_settings, run, serve_alerts


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
    from broker.core.agreement import load_agreement  # noqa: PLC0415
    from broker.exchange.subscriber import Alert, HandledLedger, Subscription  # noqa: PLC0415
    from broker.exchange.transport import RabbitTransport  # noqa: PLC0415
    from broker.state.keystore import KeyStore  # noqa: PLC0415

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
