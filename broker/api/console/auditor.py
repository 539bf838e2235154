"""The auditor's pages, read-only: checkpoints and witness status, verify a range, proofs, a summary.

Nothing here changes anything: the only POST starts a verification, which reads the log.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from broker.api.console.access import ConsoleRefusal, Role, Viewer, form_of, requires
from broker.api.console.pages import render
from broker.api.console.services import ConsoleServices, console_services
from broker.api.models import ProofKind
from broker.api.problems import ApiProblem
from broker.audit.checkpoint import SignedCheckpoint, WitnessRecord
from broker.audit.entry import AuditEntry, EntryKind
from broker.core.errors import ExchangeError, Reason

router = APIRouter(prefix="/auditor", include_in_schema=False)
Auditor = Annotated[Viewer, requires(Role.AUDITOR)]
Services = Annotated[ConsoleServices, Depends(console_services)]
SHOWN = 20


@router.get("", response_class=HTMLResponse)
async def checkpoints(request: Request, viewer: Auditor, services: Services) -> Response:
    own: list[SignedCheckpoint] = []
    witnessed: list[WitnessRecord] = []
    async with services.records.log() as source:
        size = await source.size()
        async for row in source.select(kind=EntryKind.CHECKPOINT):
            if isinstance(row, AuditEntry):
                try:
                    own.append(SignedCheckpoint.from_bytes(row.envelope))
                except ExchangeError:
                    continue  # a broken one is `verify`'s finding
        async for row in source.select(kind=EntryKind.WITNESS):
            if isinstance(row, AuditEntry):
                try:
                    witnessed.append(WitnessRecord.from_bytes(row.envelope))
                except ExchangeError:
                    continue
    gateway = services.agreement.gateway(services.settings.country).id
    countersigned = {(w.checkpoint.body.tree_size) for w in witnessed if w.checkpoint.body.origin == gateway}
    return render(
        request,
        viewer,
        "auditor/checkpoints.html",
        size=size,
        own=own[-SHOWN:][::-1],
        countersigned=countersigned,
        peer_checkpoints=[w for w in witnessed if w.checkpoint.body.origin != gateway][-SHOWN:][::-1],
        our_witnessed=[w for w in witnessed if w.checkpoint.body.origin == gateway][-SHOWN:][::-1],
        proof_kinds=list(ProofKind),
    )


@router.get("/summary", response_class=HTMLResponse)
async def summary(request: Request, viewer: Auditor, services: Services) -> Response:
    """This log's side of a reconciliation: entries by kind, and what was sent and never receipted."""
    kinds: Counter[str] = Counter()
    sent: set[UUID] = set()
    receipted: set[UUID] = set()
    async with services.records.log() as source:
        async for row in source.rows(0):
            if not isinstance(row, AuditEntry):
                kinds["unreadable"] += 1
                continue
            kinds[str(row.kind)] += 1
            if row.message_id is not None and row.kind is EntryKind.SENT:
                sent.add(row.message_id)
            elif row.message_id is not None and row.kind is EntryKind.RECEIPT_RECEIVED:
                receipted.add(row.message_id)
    return render(
        request,
        viewer,
        "auditor/summary.html",
        kinds=sorted(kinds.items()),
        unreceipted=sorted(sent - receipted)[:100],
        unreceipted_count=len(sent - receipted),
    )


@router.post("/verify")
async def start_verify(request: Request, viewer: Auditor, services: Services) -> Response:
    form = await form_of(request, viewer)
    try:
        first, last = int(form.get("first") or 0), int(form.get("last") or -1)
    except ValueError:
        raise ConsoleRefusal(422, Reason.API_REQUEST_INVALID, "first and last are entry numbers") from None
    async with services.records.log() as source:
        size = await source.size()
    last = size - 1 if last < 0 or last >= size else last
    if first < 0 or first > last:
        raise ConsoleRefusal(422, Reason.API_REQUEST_INVALID, f"the log has entries 0 to {size - 1}")
    job = services.verifications.start(first, last)
    return RedirectResponse(f"/console/auditor/verify/{job.job_id}", status_code=303)


@router.get("/verify/{job_id}", response_class=HTMLResponse)
async def verify_page(request: Request, job_id: str, viewer: Auditor, services: Services) -> Response:
    job = services.verifications.get(job_id)
    if job is None:
        raise ConsoleRefusal(
            404, Reason.API_NOT_FOUND, f"no verification {job_id} (they last until a restart)"
        )
    return render(request, viewer, "auditor/verify.html", job=job)


@router.get("/verify/{job_id}/progress")
async def verify_progress(job_id: str, viewer: Auditor, services: Services) -> Response:
    job = services.verifications.get(job_id)
    if job is None:
        raise ConsoleRefusal(404, Reason.API_NOT_FOUND, f"no verification {job_id}")
    return JSONResponse(job.as_json())


@router.get("/proof")
async def proof(viewer: Auditor, services: Services, message_id: str = "", kind: str = "sent") -> Response:
    try:
        wanted, proof_kind = UUID(message_id), ProofKind(kind)
    except ValueError:
        raise ConsoleRefusal(
            422, Reason.API_REQUEST_INVALID, "a message id (UUID) and a kind of entry"
        ) from None
    try:
        data = await services.records.prove(wanted, proof_kind)
    except ApiProblem as problem:
        raise ConsoleRefusal(problem.status, Reason(problem.reason), problem.detail or "") from None
    return Response(
        data,
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="proof-{wanted}-{proof_kind}.json"'},
    )
