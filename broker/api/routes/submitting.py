"""POST /v1/messages and /v1/envelopes: hand a message to the gateway, as the calling authority.

A payload is checked here first against its catalogue model, so a schema or rule failure comes back
422 with the field path; then the gateway seals, records and sends it (the submission channel), and
its refusals come back as problems with their reason codes. An Idempotency-Key is the submission's
request id: the gateway's ledger answers the same key and body with the same message, and the same
key with another body with 409 `submission.request_reused`.
"""

from __future__ import annotations

from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse

from broker.api.auth import CurrentCaller, act_as
from broker.api.context import ApiContext, api_context
from broker.api.models import SubmitAccepted, SubmitMessage
from broker.api.problems import ApiProblem, FieldProblem, problem_of, problem_responses
from broker.core.canonical import canonical_bytes, strict_loads
from broker.core.catalogue import payload_class
from broker.core.catalogue.base import AGREEMENT_RULE
from broker.core.errors import ExchangeError, Reason
from broker.core.ids import uuid7
from broker.core.sealing import peek
from broker.exchange.submission import REQUEST_ID_PATTERN, Accepted, Refused, Submission, sealed_submission

router = APIRouter(tags=["submitting"])

MAX_FIELD_PROBLEMS = 20
# A wrap is about 200 characters: room for dozens, and within the 16 KiB an HTTP server reads of headers.
MAX_SEALED_KEY_HEADER = 8 * 1024
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=REQUEST_ID_PATTERN,
        description="Your id for this request (1-128 printable ASCII characters): the same key and body "
        "name the same message, sent once; the same key with another body is 409.",
    ),
]
SealedKey = Annotated[
    str | None,
    Header(
        alias="X-Sealed-Key",
        min_length=1,
        max_length=MAX_SEALED_KEY_HEADER,
        pattern=r"^[A-Za-z0-9_-]+={0,2}$",
        description="For a personal type: the data key wrapped for the recipient (the x-sealed-key header).",
    ),
]

_LINKS = {
    "GetMessage": {
        "operationId": "get_message",
        "parameters": {"message_id": "$response.body#/message_id"},
        "description": "The message's state and trail.",
    },
    "GetReceipt": {
        "operationId": "get_receipt",
        "parameters": {"message_id": "$response.body#/message_id"},
    },
    "GetProof": {
        "operationId": "get_proof",
        "parameters": {"message_id": "$response.body#/message_id"},
    },
}
_SUBMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "Sealed, recorded and on its way",
        "headers": {"Location": {"description": "Where to follow the message", "schema": {"type": "string"}}},
        "links": _LINKS,
    },
    **problem_responses(400, 401, 403, 409, 413, 422, 429, 503, 504),
}


async def strict_json(request: Request) -> None:
    """The body is strict JSON (no duplicate keys, no NaN): what the exchange signs must mean one thing."""
    try:
        strict_loads(await request.body())
    except ExchangeError as error:
        raise ApiProblem(
            400, Reason.API_REQUEST_INVALID, f"the body is not strict JSON: {error.diagnostic}"
        ) from None


@router.post(
    "/messages",
    operation_id="submit_message",
    status_code=202,
    response_model=SubmitAccepted,
    responses=_SUBMIT_RESPONSES,
)
async def submit_message(
    message: SubmitMessage,
    caller: CurrentCaller,
    _strict: Annotated[None, Depends(strict_json)],  # after the caller: strangers learn nothing of it
    context: Annotated[ApiContext, Depends(api_context)],
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Submit a payload of a catalogue type for the gateway to seal as the calling authority and send."""
    if message.sender is not None:
        act_as(caller, message.sender, what="submit as")
    check_payload(message)
    submission = Submission(
        request_id=idempotency_key or str(uuid7()),
        type=message.type,
        version=message.version,
        to=message.to,
        sender=caller.authority,
        payload=message.payload,
        correlation_id=message.correlation_id,
    )
    return accepted(await context.link.submit(caller.authority, submission))


@router.post(
    "/envelopes",
    operation_id="submit_envelope",
    status_code=202,
    response_model=SubmitAccepted,
    responses=_SUBMIT_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "A signed envelope, exactly as the ministry sealed it (its bytes are sent unchanged).",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def submit_envelope(
    request: Request,
    caller: CurrentCaller,
    context: Annotated[ApiContext, Depends(api_context)],
    idempotency_key: IdempotencyKey = None,
    sealed_key: SealedKey = None,
) -> JSONResponse:
    """Submit an envelope the ministry signed with its own key; the gateway checks it and sends its bytes."""
    raw = await request.body()
    sender = peek(raw).sender
    if sender is not None:
        act_as(caller, sender, what="submit an envelope signed by")
    try:
        submission = sealed_submission(idempotency_key or str(uuid7()), raw, sealed_key=sealed_key)
    except pydantic.ValidationError:
        raise ApiProblem(422, Reason.API_REQUEST_INVALID, "an empty body is no envelope") from None
    return accepted(await context.link.submit(caller.authority, submission))


def check_payload(message: SubmitMessage) -> None:
    """The payload against its model and the agreement's rules; 422 naming each field that fails."""
    try:
        model = payload_class(message.type, message.version)
        model.model_validate_json(canonical_bytes(message.payload))
    except ExchangeError as error:
        raise ApiProblem(
            422, error.reason, error.diagnostic, errors=[FieldProblem(path="type", message=error.diagnostic)]
        ) from None
    except pydantic.ValidationError as exc:
        found = exc.errors(include_url=False, include_input=False)
        rules = [e for e in found if e["type"] == AGREEMENT_RULE]
        problems = [
            FieldProblem(
                path=".".join(["payload", *(str(part) for part in e["loc"])]),
                message=e["msg"],
                article=str(e.get("ctx", {}).get("article") or "") or None,
            )
            for e in [*rules, *(e for e in found if e["type"] != AGREEMENT_RULE)]
        ][:MAX_FIELD_PROBLEMS]
        first = problems[0]
        reason = Reason.AGREEMENT_RULE if rules else Reason.SCHEMA_INVALID
        raise ApiProblem(
            422,
            reason,
            f"{message.type} v{message.version}: {first.path}: {first.message}"
            + (f" (and {len(found) - 1} more)" if len(found) > 1 else ""),
            article=first.article if rules else None,
            errors=problems,
        ) from None


def accepted(answer: Accepted | Refused) -> JSONResponse:
    if isinstance(answer, Refused):
        raise problem_of(answer.reason, answer.diagnostic, article=answer.article)
    return JSONResponse(
        answer.model_dump(mode="json", include=set(SubmitAccepted.model_fields)),
        status_code=202,
        headers={"Location": f"/v1/messages/{answer.message_id}"},
    )
