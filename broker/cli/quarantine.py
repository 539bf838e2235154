"""`broker quarantine list|show|requeue|purge`: messages this country's gateway rejected."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from broker.cli.common import ConfigOption, CountryOption, JsonOption, load_settings, run
from broker.cli.output import console, err_console, print_table

T = TypeVar("T")
quarantine_app = typer.Typer(help="Messages rejected by this country's gateway", no_args_is_help=True)


def _with_transport(country: str, config: Path | None, action: Callable[[Any], Awaitable[T]]) -> T:
    from broker.exchange.transport import RabbitTransport  # noqa: PLC0415

    settings = load_settings(country, config)

    async def go() -> T:
        transport = await RabbitTransport.connect(url=settings.broker_url(), name=f"{country}-quarantine-cli")
        try:
            return await action(transport)
        finally:
            await transport.close()

    return run(go)


QUARANTINE_COLUMNS = ("message_id", "reason", "rejected_at", "audit_index", "bytes", "body_length")


@quarantine_app.command("list")
def quarantine_list(
    country: CountryOption, limit: int = 100, as_json: JsonOption = False, config: ConfigOption = None
) -> None:
    """List quarantined messages (they stay in the queue); ids come from unverified bytes, shown escaped."""
    from broker.exchange.topology import QUARANTINE  # noqa: PLC0415

    async def action(transport: Any) -> None:
        rows = [
            {
                "message_id": message.message_id,
                "reason": message.headers.get("x-reason", message.death_reason),
                "rejected_at": message.headers.get("x-rejected-at"),
                "audit_index": message.headers.get("x-audit-index"),
                "bytes": len(message.body),
                "body_length": message.headers.get("x-body-length", len(message.body)),
            }
            for message in await transport.peek(QUARANTINE, limit=limit)
        ]
        print_table(QUARANTINE_COLUMNS, rows, as_json=as_json)

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
    from broker.cli.terminal import visible, visible_bytes  # noqa: PLC0415
    from broker.core.errors import ConfigError, Reason  # noqa: PLC0415
    from broker.exchange.topology import QUARANTINE  # noqa: PLC0415
    from broker.state.private_files import write_private  # noqa: PLC0415

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
