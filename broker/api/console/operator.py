"""The operator's pages: overview, messages, one message, quarantine (with its actions), keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated
from uuid import UUID

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from broker.api.console.access import ConsoleRefusal, Role, Viewer, form_of, requires
from broker.api.console.chart import series, svg
from broker.api.console.pages import render
from broker.api.console.reasons import words_for
from broker.api.console.services import ConsoleServices, console_services
from broker.audit.entry import EntryKind
from broker.audit.stores.proving import entries_of
from broker.core.errors import ExchangeError, Reason
from broker.core.sealing import peek
from broker.state.key_files import KeyLayout
from broker.state.key_inventory import inventory
from broker.state.outbox import OutboxFilter, SendState

_log = structlog.get_logger("broker.console")
router = APIRouter(prefix="/operator", include_in_schema=False)
Operator = Annotated[Viewer, requires(Role.OPERATOR)]
Services = Annotated[ConsoleServices, Depends(console_services)]
PAGE = 50
EXPIRY_WARNING = timedelta(days=30)
DONE = {"requeued", "purged"}  # the notices the quarantine page shows after an action


@router.get("", response_class=HTMLResponse)
async def overview(request: Request, viewer: Operator, services: Services) -> Response:
    now = datetime.now(UTC)
    outbox = services.records.outbox
    readiness = await services.desk.readiness()
    try:
        depths: list[tuple[str, int | None]] | str = await services.desk.depths()
    except ExchangeError as error:
        depths = f"[{error.reason}] {error.diagnostic}"
    hourly = series(await outbox.hourly(now - timedelta(hours=24)), now=now)
    return render(
        request,
        viewer,
        "operator/overview.html",
        readiness=readiness,
        depths=depths,
        chart=svg(hourly, title="messages per hour"),
        oldest=await outbox.oldest_waiting(),
        now=now,
    )


def _moment(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConsoleRefusal(
            422, Reason.API_REQUEST_INVALID, f"{text!r} is not a date (YYYY-MM-DD)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _cursor(before: str) -> tuple[str, str] | None:
    """The previous page's last row, `sent_at|message_id`, as the next page's starting point."""
    sent_at, bar, message_id = before.partition("|")
    return (sent_at, message_id) if bar else None


@router.get("/messages", response_class=HTMLResponse)
async def messages(
    request: Request,
    viewer: Operator,
    services: Services,
    *,
    type: str = "",
    peer: str = "",
    state: str = "",
    since: str = "",
    until: str = "",
    before: str = "",
) -> Response:
    if state and state not in set(SendState):
        raise ConsoleRefusal(422, Reason.API_REQUEST_INVALID, f"{state!r} is not a state of a sent message")
    until_moment = _moment(until)
    where = OutboxFilter(
        message_type=type or None,
        recipient=peer or None,
        state=SendState(state) if state else None,
        since=_moment(since),
        until=until_moment + timedelta(days=1) if until_moment and len(until) == 10 else until_moment,
        before=_cursor(before),
    )
    rows = await services.records.outbox.page(where, limit=PAGE + 1)
    more = rows[PAGE:]
    rows = rows[:PAGE]
    next_before = f"{rows[-1].sent_at.isoformat()}|{rows[-1].message_id}" if more and rows else None
    rules = services.agreement.rules
    return render(
        request,
        viewer,
        "operator/messages.html",
        rows=rows,
        next_before=next_before,
        types=[r.type for r in rules],
        peers=[a.id for a in services.agreement.authorities if a.country != services.settings.country],
        states=list(SendState),
        query={"type": type, "peer": peer, "state": state, "since": since, "until": until},
    )


@router.get("/messages/{message_id}", response_class=HTMLResponse)
async def message(request: Request, message_id: UUID, viewer: Operator, services: Services) -> Response:
    record = await services.records.outbox.get(message_id)
    async with services.records.log() as source:
        trail = await entries_of(source, message_id=message_id)
    if record is None and not trail:
        raise ConsoleRefusal(404, Reason.API_NOT_FOUND, f"no message {message_id} in this gateway's records")
    raw = record.raw if record is not None else next((e.envelope for e in trail if e.envelope), b"")
    receipts = [e for e in trail if e.kind is EntryKind.RECEIPT_RECEIVED]
    reason = (record.reason if record else None) or next((e.reason for e in trail if e.reason), None)
    return render(
        request,
        viewer,
        "operator/message.html",
        message_id=message_id,
        record=record,
        seen=peek(raw) if raw else None,
        trail=trail,
        receipt=receipts[-1] if receipts else None,
        reason=reason,
        reason_words=words_for(reason),
    )


@router.get("/quarantine", response_class=HTMLResponse)
async def quarantine(request: Request, viewer: Operator, services: Services) -> Response:
    return render(
        request,
        viewer,
        "operator/quarantine.html",
        items=await services.desk.quarantine(),
        actions=await services.store.actions(),
        words_for=words_for,
        done=done if (done := request.query_params.get("done", "")) in DONE else "",
    )


@router.get("/quarantine/{message_id}", response_class=HTMLResponse)
async def quarantined(request: Request, message_id: str, viewer: Operator, services: Services) -> Response:
    item = await services.desk.quarantined_one(message_id)
    if item is None:
        raise ConsoleRefusal(404, Reason.API_NOT_FOUND, f"{message_id!r} is not in the quarantine")
    return render(
        request, viewer, "operator/quarantined.html", item=item, reason_words=words_for(item.reason)
    )


async def _act(services: ConsoleServices, viewer: Viewer, action: str, target: str, outcome: str) -> None:
    await services.store.record(
        authority=viewer.authority, token_id=viewer.token_id, action=action, target=target, outcome=outcome
    )
    _log.info(
        "console.action",
        authority=viewer.authority,
        token_id=viewer.token_id,
        action=action,
        target=target,
        outcome=outcome,
    )


@router.post("/quarantine/{message_id}/requeue")
async def requeue(request: Request, message_id: str, viewer: Operator, services: Services) -> Response:
    await form_of(request, viewer)
    try:
        await services.desk.requeue(message_id)
    except ExchangeError as error:
        await _act(services, viewer, "quarantine.requeue", message_id, f"refused [{error.reason}]")
        raise ConsoleRefusal(409, error.reason, error.diagnostic) from None
    await _act(services, viewer, "quarantine.requeue", message_id, "done")
    return RedirectResponse("/console/operator/quarantine?done=requeued", status_code=303)


@router.post("/quarantine/purge")
async def purge(request: Request, viewer: Operator, services: Services) -> Response:
    await form_of(request, viewer)
    purged = await services.desk.purge()
    await _act(services, viewer, "quarantine.purge", "quarantine", f"{purged} messages purged")
    return RedirectResponse("/console/operator/quarantine?done=purged", status_code=303)


@router.get("/keys", response_class=HTMLResponse)
async def keys(request: Request, viewer: Operator, services: Services) -> Response:
    now = datetime.now(UTC)
    records = inventory(KeyLayout(services.settings.keys_dir))
    return render(
        request,
        viewer,
        "operator/keys.html",
        records=records,
        now=now,
        soon=[r for r in records if r.status(now) == "valid" and r.not_after - now <= EXPIRY_WARNING],
        revoked=[r for r in records if r.revoked_at is not None],
    )
