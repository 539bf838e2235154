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
from broker.core.agreement import Agreement, load_agreement
from broker.core.errors import ConfigError, ExchangeError, LocalError, PolicyError, Reason
from broker.state.private_files import open_private
from broker.state.subscriber_kit import SETTINGS_FILE as KIT_SETTINGS


def subscribe(
    authority: Annotated[str, typer.Option("--as", help="subscriber authority id, e.g. TJ-CONSULATE-MOSCOW")],
    kit: Annotated[
        Path | None,
        typer.Option(
            "--kit", help="the subscriber's kit (`broker keys kit`): its settings, keys and password"
        ),
    ] = None,
    types: Annotated[
        str | None,
        typer.Option(
            "--types",
            help="comma-separated message types to bind the queue to (the operator's settings only; "
            "without it the queue is consumed as `broker topology apply` bound it)",
        ),
    ] = None,
    citizenship: Annotated[
        str | None, typer.Option("--citizenship", help="with --types: only workers of this country")
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
    """Print (or file) this subscriber's alerts as they arrive on its durable queue.

    A consulate runs it from its kit (`--kit`), as its own RabbitMQ user, which may only consume its
    queue: what reaches the queue is bound by the operator's `broker topology apply`. With the
    operator's settings instead, `--types` (and `--citizenship`) declare and bind the queue first.

    An alert is acknowledged only after it was printed, or written and synced to `--out`: a crash in
    between delivers it again (each line carries the message id, so a reader can skip a repeat).
    """
    from broker.exchange.subscriber import Alert, HandledLedger  # noqa: PLC0415

    if kit is not None and config is not None:
        exit_with(LocalError(Reason.CLI_USAGE, "give --kit or --config, not both"))
    if citizenship is not None and types is None:
        exit_with(LocalError(Reason.CLI_USAGE, "--citizenship chooses bindings: it needs --types"))
    if kit is not None:
        config = kit / KIT_SETTINGS
        if not config.is_file():
            exit_with(ConfigError(Reason.INPUT_UNREADABLE, f"{kit} is no subscriber kit: no {KIT_SETTINGS}"))
    country = authority.split("-", 1)[0]
    settings = load_settings(country, config)
    agreement = load_agreement(settings.agreement_file)
    wanted = [t.strip() for t in (types or "").split(",") if t.strip()] or _receivable(agreement, authority)
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
            declare=types is not None,
        ) as subscription:
            what = (
                ", ".join(wanted) + (f"; {citizenship.upper()} nationals only" if citizenship else "")
                if types is not None
                else "as the operator bound it"
            )
            where = f", appended to {out}" if out is not None else ""
            err_console.print(
                f"waiting for alerts for {authority} ({what}) on queue {subscription.queue}{where}; "
                "Ctrl-C stops",
                markup=False,
                highlight=False,
            )
            await serve_alerts(subscription, show, count=count)

    run(go)


def _receivable(agreement: Agreement, authority: str) -> list[str]:
    """Every type the agreement lets `authority` receive; refused (`policy.subscriber_not_allowed`)
    when none."""
    try:
        country = agreement.authority(authority).country
    except ExchangeError as error:
        exit_with(error)
    allowed = []
    for rule in agreement.rules:
        try:
            agreement.check_subscriber(subscriber_id=authority, message_type=rule.type, country=country)
        except PolicyError:
            continue
        allowed.append(rule.type)
    if not allowed:
        exit_with(
            PolicyError(
                Reason.POLICY_SUBSCRIBER_NOT_ALLOWED,
                f"{authority} may receive nothing under agreement {agreement.id}",
            )
        )
    return allowed


def append_durably(path: Path, line: str) -> None:
    """Append `line` and make it durable (fsync) before returning; the file is private (0600)."""
    descriptor = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(descriptor, line.encode("utf-8"))
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
