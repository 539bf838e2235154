"""The consulate's pages: its alerts (its country's nationals only), marking one handled, CSV export."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from broker.api.console.access import ConsoleRefusal, Role, Viewer, form_of, requires
from broker.api.console.alerts import Alert
from broker.api.console.pages import language_of, render
from broker.api.console.services import ConsoleServices, console_services
from broker.api.console.strings import text
from broker.core.catalogue.wording import in_words
from broker.core.errors import Reason

_log = structlog.get_logger("broker.console")
router = APIRouter(prefix="/consulate", include_in_schema=False)
Consulate = Annotated[Viewer, requires(Role.CONSULATE)]
Services = Annotated[ConsoleServices, Depends(console_services)]
PAGE = 50
EXPORT_LIMIT = 10_000
# A departure deadline this close (days) is highlighted as urgent.
URGENT_DAYS = 5


@router.get("", response_class=HTMLResponse)
async def alerts(
    request: Request, viewer: Consulate, services: Services, before: int | None = None
) -> Response:
    found = await services.alerts.page(
        consulate=viewer.authority, country=viewer.country, before=before, limit=PAGE + 1
    )
    more = len(found) > PAGE
    found = found[:PAGE]
    today = datetime.now(UTC).date()
    return render(
        request,
        viewer,
        "consulate/alerts.html",
        alerts=found,
        today=today,
        urgent_days=URGENT_DAYS,
        next_before=found[-1].audit_index if more and found else None,
    )


@router.post("/alerts/{message_id}/handled")
async def mark_handled(request: Request, message_id: UUID, viewer: Consulate, services: Services) -> Response:
    await form_of(request, viewer)
    if not await services.alerts.is_alert_for(message_id, country=viewer.country):
        # Not ours, or no alert at all: the same answer, so ids of other nationals' alerts leak nothing.
        raise ConsoleRefusal(404, Reason.API_NOT_FOUND, f"no alert {message_id} for {viewer.authority}")
    await services.store.mark_handled(viewer.authority, message_id, token_id=viewer.token_id)
    _log.info(
        "console.action",
        authority=viewer.authority,
        token_id=viewer.token_id,
        action="alert.handled",
        target=str(message_id),
        outcome="done",
    )
    return RedirectResponse("/console/consulate", status_code=303)


def _row(alert: Alert, language: str) -> list[str]:
    return [
        str(alert.message_id),
        alert.message_type,
        text(f"type.{alert.message_type}", language),
        alert.received_at.isoformat(),
        alert.worker,
        alert.document,
        alert.event_date,
        alert.departure_deadline.isoformat() if alert.departure_deadline else "",
        in_words("responsible_party", alert.responsible_party, language=language)
        if alert.responsible_party
        else "",
        alert.handled.at.isoformat() if alert.handled else "",
        alert.handled.token_id if alert.handled else "",
    ]


@router.get("/alerts.csv")
async def export(request: Request, viewer: Consulate, services: Services) -> Response:
    language = language_of(request)
    found = await services.alerts.page(
        consulate=viewer.authority, country=viewer.country, before=None, limit=EXPORT_LIMIT
    )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["message_id", "type", "event", "received_at", "worker", "document", "date",
         "departure_deadline", "responsible_party", "handled_at", "handled_by_token"]
    )  # fmt: skip
    for alert in found:
        writer.writerow(_row(alert, language))
    stamp = datetime.now(UTC).strftime("%Y%m%d")
    return Response(
        # A byte-order mark: spreadsheet programs on ministry desktops read UTF-8 Cyrillic correctly then.
        "\ufeff" + out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="alerts-{viewer.authority}-{stamp}.csv"'},
    )
