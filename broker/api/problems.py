"""Errors as RFC 9457 problem details (`application/problem+json`), carrying the reason code.

Every refusal of the API, and every `ExchangeError` the exchange raises under it, leaves as one
problem: `type` names the reason code (`urn:labour-exchange:reason:<code>`), `status` follows the
code's family (schema and rules 422, policy and authorisation 403, size 413, our own side 503),
`article` names the agreement's article for a broken rule, `errors` the field paths.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from broker.core.errors import ExchangeError, Reason

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:labour-exchange:reason:"

# Status by reason code; codes not listed take their family's status (below), else 500.
_STATUS_OF_REASON: dict[str, int] = {
    Reason.AUTH_UNAUTHENTICATED: 401,
    Reason.AUTH_FORBIDDEN: 403,
    Reason.API_NOT_FOUND: 404,
    Reason.RECEIPT_PENDING: 404,
    Reason.AUDIT_NOT_COVERED: 404,
    Reason.AUDIT_OUT_OF_RANGE: 404,
    Reason.API_RATE_LIMITED: 429,
    Reason.API_TIMEOUT: 504,
    Reason.SUBMISSION_REQUEST_REUSED: 409,
    Reason.REPLAY_CONFLICT: 409,
    Reason.REPLAY_DUPLICATE: 409,
    Reason.MESSAGE_OVERSIZED: 413,
    Reason.SUBMISSION_OVERSIZED: 413,
    Reason.SUBMISSION_NO_GATEWAY: 503,
    Reason.AUDIT_UNAVAILABLE: 503,
    Reason.KEY_MISSING: 503,
    Reason.CRL_STALE: 503,
    Reason.INTERNAL_ERROR: 500,
}
_STATUS_OF_FAMILY: dict[str, int] = {
    "schema": 422,
    "agreement": 422,
    "message": 422,
    "signature": 422,
    "cert": 422,
    "replay": 422,
    "payload": 422,
    "submission": 422,
    "api": 422,
    "policy": 403,
    "auth": 403,
    "transport": 503,
    "config": 503,
}
_TITLE_OF_FAMILY: dict[str, str] = {
    "schema": "The payload does not fit its schema",
    "agreement": "The payload breaks a rule of the agreement",
    "message": "The envelope cannot be read",
    "signature": "The envelope's signature does not verify",
    "cert": "The signer's certificate is not trusted for this",
    "replay": "The message id was used before",
    "payload": "The personal payload is not sealed as it must be",
    "submission": "The gateway did not take the submission",
    "policy": "The agreement does not allow this",
    "auth": "Not authorised",
    "api": "The request cannot be served",
    "receipt": "No receipt yet",
    "audit": "The audit log cannot answer this yet",
    "transport": "The exchange is not reachable",
    "config": "The exchange is not configured for this",
    "key": "A key of ours is missing",
    "crl": "A revocation list is out of date",
    "internal": "The API failed",
}


class FieldProblem(BaseModel):
    path: str = Field(description="Where in the request: `payload.worker.passport`, `query.limit`, ...")
    message: str
    article: str | None = Field(default=None, description="The agreement's article, for a broken rule.")


class Problem(BaseModel):
    """RFC 9457 problem details, with the exchange's reason code and, for a rule, the article."""

    model_config = ConfigDict(title="Problem")

    type: str = Field(description="urn:labour-exchange:reason:<reason code> (docs/reason-codes.md)")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    instance: str | None = Field(default=None, description="The request path.")
    reason: str = Field(description="The reason code, e.g. schema.invalid or auth.forbidden.")
    article: str | None = None
    errors: list[FieldProblem] | None = None


class ApiProblem(HTTPException):
    """A refusal the API answers with a problem document. An HTTPException, so FastAPI passes it on
    also when it is raised while the body is read (the size limit)."""

    def __init__(
        self,
        status: int,
        reason: Reason | str,
        detail: str,
        *,
        article: str | None = None,
        errors: Sequence[FieldProblem] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status, f"[{reason}] {detail}")
        self.status = status
        self.reason = str(reason)
        self.detail = detail
        self.article = article
        self.errors = list(errors)
        self.headers = dict(headers or {})

    def document(self, instance: str | None) -> Problem:
        return Problem(
            type=TYPE_PREFIX + self.reason,
            title=_TITLE_OF_FAMILY.get(self.reason.partition(".")[0], "Refused"),
            status=self.status,
            detail=self.detail,
            instance=instance,
            reason=self.reason,
            article=self.article,
            errors=self.errors or None,
        )


def status_of(reason: str) -> int:
    if reason in _STATUS_OF_REASON:
        return _STATUS_OF_REASON[reason]
    return _STATUS_OF_FAMILY.get(reason.partition(".")[0], 500)


def problem_of(reason: str, diagnostic: str, *, article: str | None = None) -> ApiProblem:
    """The problem for a reason code the exchange gave (a refusal of the gateway, an error raised here)."""
    return ApiProblem(status_of(reason), reason, diagnostic, article=article)


def problem_from_error(error: ExchangeError) -> ApiProblem:
    return problem_of(str(error.reason), error.diagnostic, article=error.article)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI `responses` entries for the problems an operation may answer with."""
    return {
        status: {
            "description": _DESCRIPTIONS.get(status, "Refused"),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


_DESCRIPTIONS = {
    400: "The body is not strict JSON",
    401: "No valid bearer token (auth.unauthenticated)",
    403: "Acting as another authority (auth.forbidden), or the agreement does not allow it (policy.*)",
    404: "No such message for this caller, or not there yet (receipt.pending, audit.not_covered)",
    409: "The Idempotency-Key was used for another body (submission.request_reused)",
    413: "Larger than the exchange's message limit",
    422: "The request, the payload's schema or a rule of the agreement (with the field path)",
    429: "Over this caller's rate limit (Retry-After says when to come back)",
    503: "No gateway takes submissions now, or its state cannot be read",
    504: "The request took longer than the API's timeout",
}
