"""What every `broker` command group shares: settings loading, the async runner, common options."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from broker.cli.logs import configure_logging
from broker.core.errors import ExchangeError
from broker.exchange.subscriber import Alert, AlertHandler, HandledLedger, Subscription
from broker.state.settings import ExchangeSettings

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")

CountryOption = Annotated[str, typer.Option("--country", "-c", help="TJ or RU", callback=lambda v: v.upper())]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="settings file (default: var/<country>/gateway.toml if present)"),
]


def load_settings(country: str, config: Path | None) -> ExchangeSettings:
    """The country's settings: the given file, else var/<country>/gateway.toml if present, then env."""
    path = config or Path("var") / country.lower() / "gateway.toml"
    try:
        settings = ExchangeSettings.load(path if path.exists() else None, country=country)
    except ExchangeError as error:
        exit_with(error)
    configure_logging(settings.log_format)
    return settings


def exit_with(error: ExchangeError) -> NoReturn:
    """One line `error [reason.code] what is wrong` on stderr, exit status 1, no traceback."""
    # Diagnostics quote file names and codes in brackets: never let rich read them as markup.
    err_console.print(
        f"[red]error[/red] {escape(f'[{error.reason}] {error.diagnostic}')}", highlight=False, soft_wrap=True
    )
    raise typer.Exit(1) from None


def run(coro_factory: Callable[[], Awaitable[T]]) -> T:
    """Run one async command; our errors print their reason code and exit 1, never a traceback."""

    async def main() -> T:
        return await coro_factory()

    try:
        return asyncio.run(main())
    except ExchangeError as error:
        exit_with(error)


async def serve_alerts(subscription: Subscription, handler: AlertHandler, *, count: int | None) -> None:
    """Hand each alert to `handler` until `count` alerts were handled, or SIGINT/SIGTERM."""
    done = asyncio.Event()
    handled = 0

    async def counted(alert: Alert) -> None:
        nonlocal handled
        await handler(alert)
        handled += 1
        if count is not None and handled >= count:
            done.set()

    consumer = await subscription.run(counted)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    try:
        await done.wait()
    finally:
        await consumer.cancel()


@asynccontextmanager
async def declared_subscription(
    settings: ExchangeSettings,
    *,
    authority: str,
    types: Sequence[str],
    citizenship: str | None = None,
    ledger: HandledLedger | None = None,
    purpose: str = "subscriber",
) -> AsyncIterator[Subscription]:
    """`authority`'s durable queue, declared, on the broker the settings name; closed after the block.

    Personal payloads open with `authority`'s own key-agreement key from the settings' key store.
    """
    from broker.core.agreement import load_agreement  # noqa: PLC0415
    from broker.exchange.transport import RabbitTransport  # noqa: PLC0415 - aio-pika only when needed
    from broker.state.keystore import KeyStore  # noqa: PLC0415

    agreement = load_agreement(settings.agreement_file)
    keystore = KeyStore(root=settings.keys_dir)
    transport = await RabbitTransport.connect(url=settings.amqp_url, name=f"{authority}-{purpose}")
    try:
        subscription = Subscription(
            transport=transport,
            agreement=agreement,
            trust=keystore.trust_store(agreement.countries),
            authority_id=authority,
            types=types,
            citizenship=citizenship,
            decryptor=keystore.decryptor(authority),  # personal payloads arrive sealed for us
            ledger=ledger,
        )
        await subscription.declare()
        yield subscription
    finally:
        await transport.close()
