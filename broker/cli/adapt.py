"""`broker adapt <country> ...`: national files in and out, one sub-command group per adapter package.

broker adapt ru import FILE.xml --to TJ-MOL --sender RU-MINTRUD
broker adapt tj import FILE.csv --to RU-MVD
broker adapt tj watch INBOX --to RU-MVD          (done/ and failed/ inside INBOX, or --done/--failed DIR)
broker adapt ru render --as RU-MVD --out DIR      (received alerts as national files; --out - prints)
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from adapters.base import NationalAdapter
from adapters.folder_drop import WORK, FolderDrop
from adapters.pipeline import (
    country_codes,
    import_bytes,
    import_file,
    load_adapter,
    read_file,
    render_to_folder,
)
from broker.cli.common import ConfigOption, declared_subscription, load_settings, run, serve_alerts
from broker.cli.output import console, err_console
from broker.cli.terminal import visible
from broker.cli.topology import DEFAULT_SECRETS
from broker.core.agreement_set import Agreements
from broker.core.errors import PolicyError
from broker.state.settings import ExchangeSettings

if TYPE_CHECKING:
    from broker.exchange.submitting_sender import SubmittingSender

adapt_app = typer.Typer(
    help="National adapters: import Russian XML or Tajik registry files, watch an inbox, render alerts",
    no_args_is_help=True,
)

ToOption = Annotated[
    str, typer.Option("--to", help="recipient authority in the partner country, e.g. RU-MVD")
]
SenderOption = Annotated[
    str | None,
    typer.Option("--sender", help="signing authority (default: the only one allowed for the type)"),
]


def _adapter(country: str, settings: ExchangeSettings) -> NationalAdapter:
    return load_adapter(country, state_dir=settings.country_state_dir)


def _submitting(settings: ExchangeSettings) -> SubmittingSender:
    from broker.exchange.submitting_sender import SubmittingSender  # noqa: PLC0415 - aio-pika only to send

    return SubmittingSender(
        agreement=settings.agreement_set(),
        country=settings.country,
        amqp_url=settings.amqp_url,
        secrets_file=settings.secrets_file or DEFAULT_SECRETS,
    )


def _country_app(country: str) -> typer.Typer:
    group = typer.Typer(help=f"{country} national files", no_args_is_help=True)

    @group.command("import")
    def import_command(
        file: Annotated[Path, typer.Argument(help="national file", exists=True, dir_okay=False)],
        to: ToOption,
        sender: SenderOption = None,
        wait: Annotated[bool, typer.Option("--wait/--no-wait", help="wait for each signed receipt")] = True,
        config: ConfigOption = None,
    ) -> None:
        """Validate a national file and hand what it holds to the running gateway (for a registry
        export: what changed), as the sending ministry's own RabbitMQ user."""

        async def go() -> None:
            settings = load_settings(country, config)
            adapter = _adapter(country, settings)
            adapter.parse(read_file(file), filename=file.name)  # a bad file fails before any connection
            async with _submitting(settings) as gateway:
                result = await import_file(
                    file, adapter=adapter, gateway=gateway, to=to, sender=sender, wait_receipt=wait
                )
            for message_type, message_id in result.sent:
                console.print(f"sent {message_type} {message_id}")
            console.print(f"{file.name}: {len(result.sent)} message(s) sent")

        run(go)

    @group.command("watch")
    def watch_command(
        inbox: Annotated[Path, typer.Argument(help="folder the ministry system drops files into")],
        to: ToOption,
        sender: SenderOption = None,
        interval: Annotated[float, typer.Option("--interval", help="seconds between polls")] = 2.0,
        once: Annotated[bool, typer.Option("--once", help="process what is there, then stop")] = False,
        done: Annotated[
            Path | None, typer.Option("--done", help="folder for sent files (default: INBOX/done)")
        ] = None,
        failed: Annotated[
            Path | None,
            typer.Option(
                "--failed", help="folder for refused files and their reasons (default: INBOX/failed)"
            ),
        ] = None,
        work: Annotated[
            Path | None,
            typer.Option(
                "--work",
                help=f"private folder for the file being sent, on the inbox's file system (default: INBOX/{WORK})",
            ),
        ] = None,
        config: ConfigOption = None,
    ) -> None:
        """Hand every file dropped into INBOX to the running gateway; move it to done/, or to failed/
        with a reason file."""

        async def go() -> None:
            settings = load_settings(country, config, service=True)
            adapter = _adapter(country, settings)

            async def handle(name: str, data: bytes) -> None:
                await import_bytes(
                    data, filename=name, adapter=adapter, gateway=gateway, to=to, sender=sender
                )

            drop = FolderDrop(
                inbox=inbox, handle=handle, poll_interval_s=interval, done=done, failed=failed, work=work
            )
            drop.check_folders()  # a folder that is a link, or a wrong path, is reported before connecting
            async with _submitting(settings) as gateway:
                if once:
                    for outcome in await drop.process_once():
                        status = "done" if outcome.error is None else f"[{outcome.error.reason}]"
                        console.print(f"{visible(outcome.name)}: {status}", highlight=False, markup=False)
                    return
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
                console.print(f"watching {inbox} for {country} files; Ctrl-C stops", markup=False)
                await drop.run(stop=stop)

        run(go)

    @group.command("render")
    def render_command(
        authority: Annotated[
            str, typer.Option("--as", help="subscriber authority of this country, e.g. TJ-MOL")
        ],
        out: Annotated[str, typer.Option("--out", help="folder for the rendered files, or - for stdout")],
        fmt: Annotated[
            str | None, typer.Option("--fmt", help="output format (default: the adapter's first)")
        ] = None,
        types: Annotated[
            str | None, typer.Option("--types", help="comma-separated (default: all allowed)")
        ] = None,
        count: Annotated[int | None, typer.Option("--count", help="stop after this many")] = None,
        config: ConfigOption = None,
    ) -> None:
        """Receive alerts on this authority's durable queue and write each as a national file."""
        wanted = [t.strip() for t in types.split(",")] if types else None

        async def go() -> None:
            settings = load_settings(country, config)
            adapter = _adapter(country, settings)
            chosen_fmt = fmt or adapter.render_formats[0]
            await _render(
                settings, adapter, authority=authority, out=out, fmt=chosen_fmt, types=wanted, count=count
            )

        run(go)

    return group


async def _render(
    settings: ExchangeSettings,
    adapter: NationalAdapter,
    *,
    authority: str,
    out: str,
    fmt: str,
    types: list[str] | None,
    count: int | None,
) -> None:
    from broker.exchange.subscriber import Alert  # noqa: PLC0415

    if types is None:
        agreement = settings.agreement_set()
        types = [t for t in sorted(adapter.supported_types) if _may_receive(agreement, authority, t)]

    async def write(alert: Alert) -> None:
        if out == "-":
            sys.stdout.buffer.write(adapter.render(alert.payload, fmt=fmt) + b"\n")
            sys.stdout.flush()
        else:
            path = render_to_folder(
                adapter, alert.payload, message_id=alert.message_id, out_dir=Path(out), fmt=fmt
            )
            err_console.print(f"{alert.message_type} {alert.message_id} → {path}", highlight=False)

    async with declared_subscription(
        settings, authority=authority, types=types, purpose="adapter-render"
    ) as subscription:
        await serve_alerts(subscription, write, count=count)


def _may_receive(agreement: Agreements, authority: str, message_type: str) -> bool:
    country = agreement.authority(authority).country
    try:
        agreement.check_subscriber(subscriber_id=authority, message_type=message_type, country=country)
    except PolicyError:
        return False
    return True


for _code in country_codes():
    adapt_app.add_typer(_country_app(_code), name=_code.lower())
