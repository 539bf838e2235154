"""The submission channel's wire format: what a ministry system hands its gateway, and the answers.

A ministry system publishes one JSON object to the `submit` exchange of its country's broker, as
its own RabbitMQ user with the `user_id` property set (RabbitMQ refuses any other value), a
`correlation_id` (its request id) and `reply_to` (direct reply-to). The gateway answers on
`reply_to`: `accepted` (the message id and SHA-256 of what it sealed and recorded for sending) or
`refused` (a reason code), later `receipt` (the peer's verdict). Pure: no I/O, no broker library.

Two kinds of submission:

- a payload: `{"request_id", "type", "version", "to", "payload", "sender"?, "correlation_id"?}`;
  the gateway seals it with the sender's key;
- a sealed envelope, for a ministry that signs with its own keys: `{"request_id", "sealed",
  "sealed_key"?}` with the envelope's exact bytes in standard base64; they are sent as they are.

The same `request_id` from the same submitter names the same message: sent once, answered again.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Literal, Self
from uuid import UUID

import pydantic
from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, model_validator

from broker.core.canonical import canonical_bytes, strict_loads
from broker.core.envelope import AUTHORITY_PATTERN, MESSAGE_TYPE_PATTERN, sha256_hex
from broker.core.errors import ExchangeError, LocalError, Reason
from broker.state.settings import describe_errors

# Printable ASCII without spaces: an HTTP Idempotency-Key, a UUID, a ministry's own reference.
REQUEST_ID_PATTERN = r"^[\x21-\x7e]{1,128}$"
# A wrapped data key (`x-sealed-key`) is a few hundred bytes per recipient.
MAX_SEALED_KEY_CHARS = 64 * 1024
# How long a submission waits in `submit` for a gateway before the broker drops it unsent.
DEFAULT_SUBMISSION_TTL_S = 30.0

AuthorityId = Annotated[str, Field(pattern=AUTHORITY_PATTERN, max_length=64)]
Diagnostic = Annotated[str, Field(max_length=4000)]


def max_submission_bytes(max_message_bytes: int) -> int:
    """The largest body the gateway reads: a sealed envelope of the largest size, in base64, with
    the JSON around it. Anything larger is refused unread (`submission.oversized`)."""
    return (max_message_bytes * 4) // 3 + 64 * 1024


class Submission(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    request_id: str = Field(pattern=REQUEST_ID_PATTERN)
    type: str | None = Field(default=None, pattern=MESSAGE_TYPE_PATTERN, max_length=64)
    version: int = Field(default=1, ge=1, le=1000)
    to: AuthorityId | None = None
    sender: AuthorityId | None = None
    correlation_id: UUID | None = None
    payload: dict[str, JsonValue] | None = None
    sealed: str | None = Field(default=None, min_length=1)
    sealed_key: str | None = Field(default=None, min_length=1, max_length=MAX_SEALED_KEY_CHARS)

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if (self.payload is None) == (self.sealed is None):
            raise ValueError("give exactly one of `payload` (to be sealed) and `sealed` (an envelope)")
        if self.payload is not None:
            if self.type is None or self.to is None:
                raise ValueError("a payload needs `type` and `to`")
            if self.sealed_key is not None:
                raise ValueError("`sealed_key` goes with a sealed envelope only")
        else:
            named = {"type", "version", "to", "sender", "correlation_id"} & self.model_fields_set
            if named:
                raise ValueError(f"a sealed envelope names its own {', '.join(sorted(named))}")
        return self

    def envelope_bytes(self) -> bytes:
        """The sealed envelope's exact bytes (strict base64)."""
        if self.sealed is None:
            raise LocalError(
                Reason.SUBMISSION_MALFORMED, "this submission carries a payload, not an envelope"
            )
        try:
            return base64.b64decode(self.sealed, validate=True)
        except (binascii.Error, ValueError):
            raise LocalError(Reason.SUBMISSION_MALFORMED, "`sealed` is not standard base64") from None

    def payload_bytes(self) -> bytes:
        if self.payload is None:
            raise LocalError(
                Reason.SUBMISSION_MALFORMED, "this submission carries an envelope, not a payload"
            )
        return canonical_bytes(self.payload)


def parse_submission(body: bytes, *, max_bytes: int) -> tuple[Submission, str]:
    """The submission in `body` and the SHA-256 of its canonical form (what idempotency compares).

    Strict JSON first (no duplicate keys, no NaN, bounded nesting), then the model; every failure is
    `submission.malformed`, a body over `max_bytes` `submission.oversized` before it is read.
    """
    if len(body) > max_bytes:
        raise LocalError(
            Reason.SUBMISSION_OVERSIZED, f"the submission is {len(body)} bytes, over the limit of {max_bytes}"
        )
    try:
        document = strict_loads(body)
    except ExchangeError as error:
        raise LocalError(Reason.SUBMISSION_MALFORMED, error.diagnostic) from None
    if not isinstance(document, dict):
        raise LocalError(Reason.SUBMISSION_MALFORMED, "a submission is one JSON object")
    try:
        submission = Submission.model_validate_json(body)
    except pydantic.ValidationError as exc:
        raise LocalError(Reason.SUBMISSION_MALFORMED, _first_errors(exc)) from None
    return submission, sha256_hex(canonical_bytes(document))


def encode_submission(submission: Submission) -> bytes:
    return canonical_bytes(submission.model_dump(mode="json", exclude_none=True, exclude_unset=True))


def sealed_submission(request_id: str, raw: bytes, *, sealed_key: str | None = None) -> Submission:
    """A submission of envelope bytes sealed by the ministry itself."""
    text = base64.b64encode(raw).decode("ascii")
    if sealed_key is None:
        return Submission(request_id=request_id, sealed=text)
    return Submission(request_id=request_id, sealed=text, sealed_key=sealed_key)


# -- answers -----------------------------------------------------------------------------------------


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str | None = Field(default=None, max_length=128)


class Accepted(_Answer):
    """Sealed, recorded in the outbox and audit log, and on its way (or queued to be re-sent)."""

    status: Literal["accepted"] = "accepted"
    message_id: UUID
    sha256: str
    type: str
    sender: str
    to: str
    # The request id was seen before: this is the message it made then, not a new one.
    repeated: bool = False


class Refused(_Answer):
    """Not sent: nothing was recorded for this request (it may be submitted again, corrected)."""

    status: Literal["refused"] = "refused"
    reason: str
    diagnostic: Diagnostic
    article: str | None = None


class ReceiptNews(_Answer):
    """The peer's receipt came back. `final` is false for a rejection that leaves the message
    outstanding, to be re-sent at its deadline (e.g. `payload.undecryptable`)."""

    status: Literal["receipt"] = "receipt"
    message_id: UUID
    verdict: Literal["accepted", "rejected"]
    reason: str | None = None
    diagnostic: Diagnostic | None = None
    audit_index: int | None = None
    final: bool = True


Answer = Annotated[Accepted | Refused | ReceiptNews, Field(discriminator="status")]
_ANSWER = TypeAdapter[Accepted | Refused | ReceiptNews](Answer)


def encode_answer(answer: Accepted | Refused | ReceiptNews) -> bytes:
    return answer.model_dump_json().encode("utf-8")


def parse_answer(body: bytes) -> Accepted | Refused | ReceiptNews:
    try:
        return _ANSWER.validate_json(body)
    except pydantic.ValidationError as exc:
        raise LocalError(Reason.SUBMISSION_MALFORMED, f"the gateway's answer: {_first_errors(exc)}") from None


def refused(error: ExchangeError, request_id: str | None) -> Refused:
    return Refused(
        request_id=request_id,
        reason=str(error.reason),
        diagnostic=error.diagnostic[:4000],
        article=error.article,
    )


def _first_errors(exc: pydantic.ValidationError) -> str:
    return describe_errors(exc)[:2000]
