"""`broker quarantine list|show|requeue|purge`: messages this country's gateway rejected."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from broker.cli.common import ConfigOption, CountryOption, console, err_console, load_settings, run

T = TypeVar("T")
quarantine_app = typer.Typer(help="Messages rejected by this country's gateway", no_args_is_help=True)


def _with_transport(country: str, config: Path | None, action: Callable[[Any], Awaitable[T]]) -> T:
    from broker.exchange.transport import RabbitTransport  # noqa: PLC0415

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
    from broker.exchange.topology import QUARANTINE  # noqa: PLC0415

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
def quarantine_show(message_id: str, country: CountryOption, config: ConfigOption = None) -> None:
    """Reason, diagnostic and original bytes of one quarantined message."""
    from broker.exchange.topology import QUARANTINE  # noqa: PLC0415

    async def action(transport: Any) -> None:
        for message in await transport.peek(QUARANTINE, limit=10_000):
            if message.message_id == message_id:
                console.print_json(json.dumps({k: str(v) for k, v in message.headers.items()}))
                sys.stdout.write(message.body.decode("utf-8", errors="replace") + "\n")
                return
        err_console.print(f"{message_id} is not in {country}'s quarantine")
        raise typer.Exit(1)

    _with_transport(country, config, action)


@quarantine_app.command("requeue")
def quarantine_requeue(message_id: str, country: CountryOption, config: ConfigOption = None) -> None:
    """Put one quarantined message back on the inbound queue (e.g. after a trust update)."""
    from broker.exchange.quarantine import requeue  # noqa: PLC0415

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
    from broker.exchange.topology import QUARANTINE  # noqa: PLC0415

    if not yes and not typer.confirm(f"Purge every message in {country}'s quarantine?"):
        raise typer.Exit(1)

    async def action(transport: Any) -> None:
        console.print(f"purged {await transport.purge(QUARANTINE)} messages")

    _with_transport(country, config, action)
