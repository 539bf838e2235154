"""What the API reads and answers, as pydantic models: they are the OpenAPI contract's schemas."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from broker.core.catalogue import payload_to_json, sample_payloads
from broker.core.envelope import AUTHORITY_PATTERN, MESSAGE_TYPE_PATTERN
from broker.state.outbox import SendState

AuthorityField = Field(pattern=AUTHORITY_PATTERN, max_length=64)


def _death_example() -> Any:
    return {
        "type": "worker.death",
        "version": 1,
        "to": "TJ-MOL",
        "payload": payload_to_json(sample_payloads()["worker.death"]),
    }


class SubmitMessage(BaseModel):
    """A payload of a catalogue type for the gateway to seal, as the calling authority, and send."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_death_example()]})

    type: str = Field(pattern=MESSAGE_TYPE_PATTERN, max_length=64, description="e.g. worker.death")
    version: int = Field(default=1, ge=1, le=1000)
    to: str = Field(pattern=AUTHORITY_PATTERN, max_length=64, description="The recipient, e.g. TJ-MOL.")
    payload: dict[str, JsonValue] = Field(
        description="The payload; its schema: GET /v1/catalogue/{type}/{version}"
    )
    sender: str | None = Field(
        default=None,
        pattern=AUTHORITY_PATTERN,
        max_length=64,
        description="The calling authority (the default); any other is refused (auth.forbidden).",
    )
    correlation_id: UUID | None = Field(default=None, description="The message this one answers.")


class SubmitAccepted(BaseModel):
    """Sealed, recorded and on its way; follow it at `Location`."""

    message_id: UUID
    sha256: str = Field(description="SHA-256 of the signed envelope's bytes, as the receipt will name it.")
    type: str
    sender: str
    to: str
    repeated: bool = Field(description="The Idempotency-Key was seen before: this is the message it made.")


class TrailEntry(BaseModel):
    index: int = Field(description="The entry's index in this gateway's audit log.")
    time: datetime
    kind: str = Field(description="sent, receipt-received, received, receipt-sent, delivered, ...")
    type: str | None
    peer: str | None
    verdict: str | None
    reason: str | None


class MessageStatus(BaseModel):
    message_id: UUID
    type: str
    sender: str
    to: str
    state: SendState = Field(description="sent -> confirmed -> receipted | rejected")
    reason: str | None = Field(description="The reason code of a rejection (also one the gateway re-sends).")
    attempts: int
    sent_at: datetime
    deadline: datetime = Field(description="When it is re-sent unless a receipt came.")
    receipt_at: datetime | None
    trail: list[TrailEntry]


class ReceiptView(BaseModel):
    message_id: UUID
    verdict: str = Field(description="accepted or rejected")
    reason: str | None
    received_at: datetime = Field(description="When our gateway logged the receipt.")
    audit_index: int = Field(description="The receipt's entry in our audit log (prove it: .../proof).")
    receipt_id: UUID | None = Field(description="The signed receipt's id (one receipt.batch answers many).")
    receipt_sha256: str | None
    receipt: str | None = Field(
        description="The signed receipt envelope's bytes, standard base64 (null once archived)."
    )


class ProofKind(StrEnum):
    RECEIPT_RECEIVED = "receipt-received"
    SENT = "sent"
    RECEIVED = "received"


PayloadState = Literal["open", "erased", "unreadable"]


class ReceivedMessage(BaseModel):
    message_id: UUID
    type: str
    version: int | None = Field(description="null when the envelope could not be opened again")
    sender: str
    recipient: str
    created_at: datetime | None
    received_at: datetime
    audit_index: int
    sha256: str
    payload_state: PayloadState = Field(
        description="open: `payload` holds it; erased: its data key was destroyed; unreadable: see `reason`."
    )
    payload: dict[str, JsonValue] | None
    reason: str | None = None


class ReceivedPage(BaseModel):
    items: list[ReceivedMessage]
    next_cursor: int = Field(description="Pass as `cursor` for the next page (an audit index).")


class CatalogueEntry(BaseModel):
    type: str
    version: int
    personal: bool = Field(description="Carries personal data: sealed for its recipient on the wire.")
    article: str | None = Field(description="The agreement's article for the type.")
    senders: list[str] = Field(description="Authorities of this country the agreement lets send it.")
    schema_url: str


class Catalogue(BaseModel):
    types: list[CatalogueEntry]
