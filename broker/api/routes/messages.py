"""GET /v1/messages/{id}[/receipt|/proof]: a sent message's state and trail, its receipt, its proof.

`?wait=N` long-polls: the answer comes when the receipt is in (or after N seconds), so a caller
need not poll. Only the sending authority reads a message (403 `auth.forbidden` otherwise).
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from broker.api.auth import CurrentCaller
from broker.api.context import ApiContext, api_context
from broker.api.models import MessageStatus, ProofKind, ReceiptView
from broker.api.problems import problem_responses
from broker.state.outbox import SendState

router = APIRouter(tags=["messages"])

MAX_WAIT_S = 30
Context = Annotated[ApiContext, Depends(api_context)]


@router.get(
    "/messages/{message_id}",
    operation_id="get_message",
    response_model=MessageStatus,
    responses=problem_responses(401, 403, 404, 422, 429, 503, 504),
)
async def get_message(
    message_id: UUID,
    caller: CurrentCaller,
    context: Context,
    wait: Annotated[
        int, Query(ge=0, le=MAX_WAIT_S, description="Seconds to wait for the receipt before answering.")
    ] = 0,
) -> MessageStatus:
    """The message's state (sent, confirmed, receipted or rejected, with the reason) and its audit trail."""
    status = await context.records.status(caller.authority, message_id)
    if wait and status.state not in (SendState.RECEIPTED, SendState.REJECTED):
        await context.waiters.wait(message_id, timeout_s=wait)
        status = await context.records.status(caller.authority, message_id)
    return status


@router.get(
    "/messages/{message_id}/receipt",
    operation_id="get_receipt",
    response_model=ReceiptView,
    responses=problem_responses(401, 403, 404, 422, 429, 503, 504),
)
async def get_receipt(message_id: UUID, caller: CurrentCaller, context: Context) -> ReceiptView:
    """The peer's signed receipt for the message (404 `receipt.pending` until it came)."""
    return await context.records.receipt(caller.authority, message_id)


@router.get(
    "/messages/{message_id}/proof",
    operation_id="get_proof",
    responses={
        200: {
            "description": "An inclusion proof file: `broker audit check-proof` checks it with the trust bundles",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        **problem_responses(401, 403, 404, 422, 429, 503, 504),
    },
)
async def get_proof(
    message_id: UUID,
    caller: CurrentCaller,
    context: Context,
    kind: Annotated[
        ProofKind,
        Query(
            description="Which entry: the receipt we logged (default), the sending, or a received message."
        ),
    ] = ProofKind.RECEIPT_RECEIVED,
) -> Response:
    """An inclusion proof of the message's entry in this gateway's signed audit log."""
    proof = await context.records.proof(caller.authority, message_id, kind)
    return Response(proof, media_type="application/json")
