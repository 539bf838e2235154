"""What every `broker` command group shares: settings loading, the async runner, common options."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer

from broker.cli.logs import configure_logging
from broker.cli.output import debugging, error_line, print_error
from broker.core.agreement_set import Agreements, shipped_agreements_of, shipped_pairs
from broker.core.errors import ConfigError, ExchangeError, Reason, TransportError
from broker.exchange.subscriber import Alert, AlertHandler, HandledLedger, Subscription
from broker.state.settings import ExchangeSettings

if TYPE_CHECKING:
    from broker.exchange.personal_keys import KeyUnwrapper
    from broker.exchange.transport_api import Transport
    from broker.state.keystore import KeyStore

T = TypeVar("T")

CountryOption = Annotated[
    str, typer.Option("--country", "-c", help="TJ, RU or UZ", callback=lambda v: v.upper())
]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON for scripts instead of readable text")]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="settings file (default: var/<country>/gateway.toml if present)"),
]


def load_settings(country: str, config: Path | None, *, service: bool = False) -> ExchangeSettings:
    """The country's settings: the given file, else var/<country>/gateway.toml if present, then env.

    A `service` (the gateway, a folder watch) logs its events from INFO up; a command that answers
    and ends prints its own lines and logs only warnings, so its output stays what it says. `--debug`
    logs everything.

    A `--config` that names no file is an error, never silently replaced by the defaults; so is a
    country the settings' agreement does not know.
    """
    if config is not None and not config.is_file():
        exit_with(ConfigError(Reason.INPUT_UNREADABLE, f"settings file {config} does not exist"))
    path = config or Path("var") / country.lower() / "gateway.toml"
    if config is None:
        try:
            _check_shipped_country(country)  # the shipped agreements, before any settings
        except ExchangeError as error:
            exit_with(error)
    try:
        settings = ExchangeSettings.load(path if path.exists() else None, country=country)
        _check_country(settings.country, settings.agreement_set())
    except ExchangeError as error:
        if not path.exists():
            error = ConfigError(
                error.reason,
                f"{error.diagnostic} (no settings file: {path} does not exist; `broker init --country "
                f"{country}` makes one, or pass --config FILE)",
            )
        exit_with(error)
    level = logging.DEBUG if debugging() else logging.INFO if service else logging.WARNING
    configure_logging(settings.log_format, level=level)
    return settings


def _check_shipped_country(country: str) -> None:
    if not shipped_agreements_of(country):
        raise ConfigError(
            Reason.CONFIG_INVALID,
            f"unknown country {country}: the shipped agreements are between {shipped_pairs()}",
        )


def _check_country(country: str, agreement: Agreements) -> None:
    if country not in agreement.countries:
        raise ConfigError(
            Reason.CONFIG_INVALID,
            f"unknown country {country}: agreement {agreement.id} is between {' and '.join(agreement.countries)}",
        )


def read_input(path: Path, *, what: str) -> bytes:
    """A file named on the command line, or one line `error [input.unreadable]` naming it."""
    try:
        return path.read_bytes()
    except OSError as exc:
        exit_with(ConfigError(Reason.INPUT_UNREADABLE, f"cannot read {what} {path}: {exc.strerror}"))


def exit_with(error: ExchangeError) -> NoReturn:
    """One line `error [reason.code] what is wrong` on stderr, exit status 1 (2 for a wrong call).

    With `--debug` the error is raised instead, for `broker.cli.app.main` to print its traceback.
    """
    if debugging():
        raise error
    print_error(error_line(error))
    raise typer.Exit(2 if error.reason is Reason.CLI_USAGE else 1) from None


def run(coro_factory: Callable[[], Awaitable[T]]) -> T:
    """Run one async command; our errors print their reason code and exit 1, never a traceback."""

    async def main() -> T:
        return await coro_factory()

    try:
        return asyncio.run(main())
    except ExchangeError as error:
        exit_with(error)


def stop_on_signals(stop: asyncio.Event | None = None) -> asyncio.Event:
    """An event set by SIGINT or SIGTERM: what a long-running command waits for."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


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
    stop_on_signals(done)
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
    declare: bool = True,
) -> AsyncIterator[Subscription]:
    """`authority`'s durable queue on the broker the settings name; closed after the block.

    With `declare`, the queue is declared and bound to `types` (what the operator's own settings may
    do); without, it must exist already, as `broker topology apply` declares it with the bindings the
    operator chose, and is only consumed: all a subscriber's own user may do. Personal payloads open
    with `authority`'s own key-agreement key from the settings' key store.
    """
    from broker.exchange.transport import RabbitTransport  # noqa: PLC0415 - aio-pika only when needed
    from broker.state.exposure import refuse_exposed_secrets  # noqa: PLC0415
    from broker.state.keystore import KeyStore  # noqa: PLC0415

    refuse_exposed_secrets(keys_dir=settings.keys_dir, secret_files=[settings.secrets_file])
    agreement = settings.agreement_set()
    keystore = KeyStore(root=settings.keys_dir)
    url = settings.broker_url()
    transport = await RabbitTransport.connect(
        url=url, name=f"{authority}-{purpose}", failover=settings.failover_urls(url)
    )
    try:
        subscription = Subscription(
            transport=transport,
            agreement=agreement,
            trust=keystore.trust_store(agreement.countries),
            authority_id=authority,
            types=types,
            citizenship=citizenship,
            # Personal payloads arrive sealed for us; a key issued while we run is read when first named.
            decryptor=_following_decryptor(keystore, authority),
            ledger=ledger,
        )
        if declare:
            await _declare(subscription)
        else:
            await _existing_queue(transport, subscription.queue)
        yield subscription
    finally:
        await transport.close()


async def _declare(subscription: Subscription) -> None:
    try:
        await subscription.declare()
    except TransportError as error:
        if error.reason is not Reason.TRANSPORT_FORBIDDEN:
            raise
        raise TransportError(
            Reason.TRANSPORT_FORBIDDEN,
            f"this RabbitMQ user may not bind {subscription.queue} (a subscriber's own user only "
            f"consumes it): what reaches it is the operator's `broker topology apply`; leave out --types",
        ) from None


async def _existing_queue(transport: Transport, queue: str) -> None:
    """The subscriber's queue must be there: a passive declare, which needs no right."""
    try:
        await transport.queue_counts(queue)
    except TransportError as error:
        if error.reason is not Reason.CONFIG_INVALID:  # a 404: anything else is told as it is
            raise
        raise ConfigError(
            Reason.CONFIG_INVALID,
            f"no queue {queue} to consume ({error.diagnostic}): the operator's `broker topology apply` "
            "declares each subscriber's queue",
        ) from None


def _following_decryptor(keystore: KeyStore, authority: str) -> KeyUnwrapper:
    """`authority`'s key-agreement keys, read again from the key store when a wrap names a new one;
    refused at once (`key.missing`) when the authority has none at all."""
    from broker.exchange.personal_keys import ReloadingDecryptor  # noqa: PLC0415

    keystore.decryptor(authority)
    return ReloadingDecryptor(keystore, authority)
