"""The envelope: routing metadata plus payload, and its wire form.

Wire form: the RFC 8785 canonical JSON of the envelope's members plus a `signature` member holding
a detached JWS over the canonical JSON of the envelope *without* `signature`. A receiver refuses
bytes that are not exactly canonical, so the bytes stored, hashed and receipted are the bytes signed.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue

from broker.core.canonical import canonical_bytes

MESSAGE_TYPE_PATTERN = r"^[a-z_]+(\.[a-z_]+)*$"
AUTHORITY_PATTERN = r"^[A-Z]{2}-[A-Z0-9-]+$"


def _utc(value: datetime) -> datetime:
    if value.utcoffset() is None or value.utcoffset() != UTC.utcoffset(None):
        raise ValueError("created_at must be UTC")
    return value


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


def format_time(value: datetime) -> str:
    """RFC 3339 UTC with microseconds and `Z`: one spelling per instant, so canonical bytes are stable."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Envelope(BaseModel):
    """An envelope as it was signed (without its signature)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    id: UUID
    type: str = Field(pattern=MESSAGE_TYPE_PATTERN, max_length=64)
    version: int = Field(ge=1, le=1000)
    sender: str = Field(pattern=AUTHORITY_PATTERN, max_length=64)
    recipient: str = Field(pattern=AUTHORITY_PATTERN, max_length=64)
    created_at: UtcDatetime
    correlation_id: UUID | None = None
    payload: dict[str, JsonValue]

    @property
    def type_tag(self) -> str:
        return f"{self.type}/{self.version}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "type": self.type,
            "version": self.version,
            "sender": self.sender,
            "recipient": self.recipient,
            "created_at": format_time(self.created_at),
            "correlation_id": None if self.correlation_id is None else str(self.correlation_id),
            "payload": self.payload,
        }

    def signing_bytes(self) -> bytes:
        return canonical_bytes(self.to_json())


class WireEnvelope(Envelope):
    """The envelope with its detached JWS, exactly as it travels."""

    signature: str = Field(max_length=16384)


def sha256_hex(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()
