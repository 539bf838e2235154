"""`broker gateway|send|status`: run a country's gateway, hand it a message to send, follow a message."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated
from uuid import UUID

import pydantic
import typer

from broker.cli.common import (
    ConfigOption,
    CountryOption,
    JsonOption,
    exit_with,
    load_settings,
    read_input,
    run,
    stop_on_signals,
)
from broker.cli.output import console, print_json, print_table
from broker.cli.submitting import DEFAULT_RECEIPT_WAIT_S, submit_and_follow
from broker.cli.topology import DEFAULT_SECRETS
from broker.core.canonical import strict_loads
from broker.core.catalogue import parse_payload
from broker.core.errors import AuditError, ExchangeError, LocalError, Reason
from broker.core.ids import uuid7
from broker.exchange.submission import Submission
from broker.state.settings import ExchangeSettings, describe_errors


def gateway(country: CountryOption, config: ConfigOption = None) -> None:
    """Run this country's gateway until interrupted."""
    from broker.exchange import runtime  # noqa: PLC0415
    from broker.exchange.gateway import Gateway  # noqa: PLC0415 - keeps `broker keys` free of aio-pika start-up
    from broker.exchange.gateway.assembly import check_before_start  # noqa: PLC0415
    from broker.exchange.gateway.standby import ActiveRole, Role  # noqa: PLC0415
    from broker.exchange.metrics import GatewayMetrics  # noqa: PLC0415
    from broker.exchange.status_server import GatewayStatus, serving_status  # noqa: PLC0415

    settings = load_settings(country, config, service=True)
    runtime.use_fast_event_loop()

    async def serve() -> None:
        stop = stop_on_signals()
        check_before_start(settings)  # told in one line before any lock is taken or port opened
        role = ActiveRole.from_settings(settings)
        status_source = GatewayStatus(settings, role=role, metrics=GatewayMetrics())
        async with serving_status(status_source, settings) as status:
            where = f"; /metrics /healthz /readyz on port {status.port}" if status else ""
            # A second gateway of the country waits here as the standby until the first one dies.
            if role.role is not Role.ACTIVE and not await role.lock.try_acquire():
                console.print(f"standby: another {settings.country} gateway is active; waiting for its lock")
            if not await role.wait_until_active(stop):
                await role.release()
                return
            async with Gateway.from_settings(settings, metrics=status_source.metrics, role=role) as gw:
                status_source.gateway = gw
                runtime.tune_for_long_run()
                peers = ", ".join(
                    f"{gw.agreement.gateway(peer).id} ({gw.agreement.for_peer(peer).id})" for peer in gw.peers
                )
                console.print(
                    f"gateway {gw.gateway_id} running (active); {'peers' if len(gw.peers) > 1 else 'peer'} "
                    f"{peers}{where}. Ctrl-C stops."
                )
                if gw.submitters:
                    console.print(f"taking submissions (`broker send`) from {', '.join(gw.submitters)}")
                await _first_of(stop, role.lost)
            if role.lost.is_set():
                raise AuditError(
                    Reason.AUDIT_WRITER_LOST,
                    f"{settings.country}'s gateway lost the audit log's writer lock and stopped; "
                    "started again it waits as the standby",
                )

    run(serve)


async def _first_of(*events: asyncio.Event) -> None:
    waiting = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waiting:
            task.cancel()


def send(
    country: CountryOption,
    message_type: Annotated[str, typer.Option("--type", help="e.g. worker.death")],
    file: Annotated[Path, typer.Option("--file", help="payload JSON")],
    to: Annotated[str, typer.Option("--to", help="recipient authority id, e.g. TJ-MOL")],
    sender: Annotated[
        str | None,
        typer.Option("--sender", help="the ministry that submits and signs (default: the only one allowed)"),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="wait for the peer's signed receipt (default) or not")
    ] = True,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="seconds to wait for the receipt before giving up")
    ] = DEFAULT_RECEIPT_WAIT_S,
    request_id: Annotated[
        str | None,
        typer.Option("--request-id", help="your id for this request: the same id never sends twice"),
    ] = None,
    secrets: Annotated[
        Path | None,
        typer.Option(
            "--secrets", help=f"RabbitMQ passwords (default: {DEFAULT_SECRETS}, as topology apply writes)"
        ),
    ] = None,
    version: int = 1,
    config: ConfigOption = None,
) -> None:
    """Hand a payload to the country's running gateway, print its message id, wait for the receipt.

    Connects as the sending ministry's own RabbitMQ user; the gateway (`broker gateway`) seals,
    records and sends. Exit 0 when the peer accepted it; 1 when it was refused or rejected, or no
    receipt came within --timeout (the message stays on its way: `broker status` follows it).
    """
    from broker.exchange.submitter import submitter_login, submitting_authority  # noqa: PLC0415

    settings = load_settings(country, config)
    raw = read_input(file, what="payload file")
    try:
        parse_payload(message_type, version, raw)  # a bad payload is named before anything connects
        document = strict_loads(raw)
        authority = submitting_authority(settings.agreement_set(), settings.country, message_type, sender)
        submission = _submission(request_id or str(uuid7()), message_type, version, to, authority, document)
        user, url = submitter_login(
            settings.amqp_url,
            country=settings.country,
            authority=authority,
            secrets_file=secrets or _secrets_file(settings),
        )
    except ExchangeError as error:
        exit_with(error)
    follow = f"broker status {{id}} --country {settings.country}" + (f" --config {config}" if config else "")
    code = run(
        lambda: submit_and_follow(
            url=url,
            user=user,
            country=settings.country,
            submission=submission,
            wait=wait,
            timeout_s=timeout,
            follow=follow,
        )
    )
    raise typer.Exit(code)


def _secrets_file(settings: ExchangeSettings) -> Path:
    """The passwords file the country's settings name (`secrets_file`, as `broker init` writes it),
    else the default `broker topology apply` writes."""
    return settings.secrets_file or DEFAULT_SECRETS


def _submission(
    request_id: str, message_type: str, version: int, to: str, sender: str, document: object
) -> Submission:
    if not isinstance(document, dict):
        raise LocalError(Reason.SCHEMA_INVALID, "the payload file must hold one JSON object")
    try:
        return Submission(
            request_id=request_id, type=message_type, version=version, to=to, sender=sender, payload=document
        )
    except pydantic.ValidationError as exc:
        raise LocalError(Reason.SUBMISSION_MALFORMED, describe_errors(exc)) from None


TRAIL_COLUMNS = ("index", "time", "kind", "type", "peer", "agreement", "verdict", "reason")


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
    try:
        agreements = settings.agreement_set()
    except ExchangeError as error:
        exit_with(error)

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
                    # The agreement the exchange with that peer falls under (its country's).
                    "agreement": agreements.named_by(entry.peer),
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
