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
from broker.audit.bundle import check_bundle
from broker.audit.checkpoint import SignedCheckpoint, WitnessRecord
from broker.audit.entry import AuditEntry, EntryKind
from broker.audit.stores.worker_evidence import worker_bundle
from broker.core.errors import ExchangeError, Reason
from broker.state.key_files import KeyLayout, load_agreement_keys
from broker.state.key_vault import VAULT_FILE

router = APIRouter(prefix="/auditor", include_in_schema=False)
Auditor = Annotated[Viewer, requires(Role.AUDITOR)]
Services = Annotated[ConsoleServices, Depends(console_services)]
SHOWN = 20
MAX_DOCUMENT = 64


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


@router.get("/bundle")
async def bundle(viewer: Auditor, services: Services, worker: str = "") -> Response:
    """One worker's evidence bundle, as `broker audit bundle` writes it, checked before it is handed out.

    Sealed payloads are opened with the auditor authority's key-agreement keys when this country's
    key store holds them (and the key vault's wraps), else listed as not searched."""
    document = worker.strip()
    if not document or len(document) > MAX_DOCUMENT or not document.isprintable():
        raise ConsoleRefusal(422, Reason.API_REQUEST_INVALID, "an identity document number")
    settings = services.settings
    keys_dir = KeyLayout(settings.keys_dir).encryption_dir(viewer.authority)
    try:
        keys = load_agreement_keys([keys_dir]) if keys_dir.is_dir() else []
    except ExchangeError:
        keys = []  # no private key of the auditor here: sealed payloads are counted, not opened
    vault = settings.country_state_dir / VAULT_FILE
    try:
        async with services.records.log() as source:
            found = await worker_bundle(
                source, worker=document, archive=None, keys=keys, vault=vault if vault.is_file() else None
            )
        check_bundle(found.data, trust=services.keystore.trust_store(services.agreement.countries))
    except ExchangeError as error:
        status = 404 if error.reason in (Reason.AUDIT_OUT_OF_RANGE, Reason.AUDIT_NOT_COVERED) else 409
        raise ConsoleRefusal(status, error.reason, error.diagnostic) from None
    safe = "".join(c if c.isalnum() else "-" for c in document)
    return Response(
        found.data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="evidence-{safe}.zip"'},
    )
