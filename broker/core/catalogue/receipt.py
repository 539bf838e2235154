"""The receiving gateway's answer to every message: accepted, or rejected with a reason code."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Self
from uuid import UUID

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from broker.core.catalogue.base import Model, Payload, inconsistent
from broker.core.catalogue.fields import Count, Sha256Hex, UtcDatetime

MAX_DIAGNOSTIC = 4000
Diagnostic = Annotated[str, Field(min_length=1, max_length=MAX_DIAGNOSTIC)]


class Verdict(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class Checkpoint(Model):
    """The receiver's signed audit checkpoint that covers the entry for the message."""

    tree_size: Count
    root_hash: Sha256Hex
    signature: str | None = Field(default=None, min_length=1, max_length=4000)


class Receipt(Payload):
    MESSAGE_TYPE: ClassVar[str] = "receipt"
    VERSION: ClassVar[int] = 1

    message_id: UUID
    sha256: Sha256Hex  # of the exact bytes received, before any parsing
    verdict: Verdict
    # Not tied to our Reason enum: a peer running a newer release may send codes we do not know yet.
    reason: str | None = Field(default=None, pattern=r"^[a-z][a-z_]*(\.[a-z][a-z_]*)+$", max_length=100)
    diagnostic: Diagnostic | None = None
    received_at: UtcDatetime
    audit_index: Count | None = None
    checkpoint: Checkpoint | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.verdict is Verdict.REJECTED) != (self.reason is not None):
            raise inconsistent("a reason is given if and only if the verdict is rejected")
        if (
            self.checkpoint is not None
            and self.audit_index is not None
            and self.audit_index >= self.checkpoint.tree_size
        ):
            raise inconsistent("the checkpoint does not cover audit_index")
        return self


# A window under load answers at most a prefetch's worth of messages; the cap bounds the envelope
# (a line is about 200 bytes, a rejection's diagnostic at most 1000 more).
MAX_RECEIPT_LINES = 1024


class ReceiptLine(Model):
    """One message's line in a batched receipt: what a single receipt says, less the checkpoint."""

    message_id: UUID
    sha256: Sha256Hex  # of the exact bytes received, before any parsing
    verdict: Verdict
    reason: str | None = Field(default=None, pattern=r"^[a-z][a-z_]*(\.[a-z][a-z_]*)+$", max_length=100)
    diagnostic: Diagnostic | None = None
    audit_index: Count  # the RECEIVED or REJECTED entry, covered by the receipt's checkpoint

    @model_validator(mode="after")
    def _reason_iff_rejected(self) -> Self:
        if (self.verdict is Verdict.REJECTED) != (self.reason is not None):
            raise inconsistent("a reason is given if and only if the verdict is rejected")
        return self


class UnreadableLine(Model):
    """A refusal of bytes whose message id could not be read (not JSON, duplicate keys, too deep,
    not UTF-8, over the size limit): named by the SHA-256 of the whole body, the only key both sides
    have. The sender finds its message by that hash in its outbox (docs/decisions.md)."""

    sha256: Sha256Hex  # of the exact bytes received, before any parsing
    reason: str = Field(pattern=r"^[a-z][a-z_]*(\.[a-z][a-z_]*)+$", max_length=100)
    diagnostic: Diagnostic | None = None
    audit_index: Count  # the REJECTED entry, covered by the receipt's checkpoint


class ReceiptBatch(Payload):
    """One signed receipt for every message answered in one checkpoint window (docs/decisions.md).

    Each line names a message, the SHA-256 of the bytes that arrived, its verdict and its audit index;
    the checkpoint covers every listed index. A message's proof of receipt is this receipt plus the
    inclusion proof of its line's audit index under the checkpoint. A window of one is a batch of one.
    `unreadable` answers bodies whose id could not be read, by their SHA-256; a gateway sends them in a
    batch of their own, and leaves the member out when there are none, so every other receipt is
    byte for byte what a gateway without it signs and reads.
    """

    MESSAGE_TYPE: ClassVar[str] = "receipt.batch"
    VERSION: ClassVar[int] = 1

    received_at: UtcDatetime
    checkpoint: Checkpoint | None = None
    lines: tuple[ReceiptLine, ...] = Field(max_length=MAX_RECEIPT_LINES)
    unreadable: tuple[UnreadableLine, ...] = Field(default=(), max_length=MAX_RECEIPT_LINES)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not self.lines and not self.unreadable:
            raise inconsistent("a receipt answers at least one message or body")
        answered = {(line.message_id, line.sha256) for line in self.lines}
        if len(answered) != len(self.lines):
            raise inconsistent("a message (id and sha256) is listed twice")
        if len({line.sha256 for line in self.unreadable}) != len(self.unreadable):
            raise inconsistent("an unreadable body (sha256) is listed twice")
        indexes = [line.audit_index for line in self.lines] + [line.audit_index for line in self.unreadable]
        if self.checkpoint is not None and any(index >= self.checkpoint.tree_size for index in indexes):
            raise inconsistent("the checkpoint does not cover every audit_index")
        return self

    @model_serializer(mode="wrap")
    def _without_empty_unreadable(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if not data.get("unreadable"):
            data.pop("unreadable", None)
        return data

    def receipts(self) -> list[Receipt]:
        """Each line as the single receipt it stands for (under this receipt's checkpoint and time).

        Built without validating again: the batch was validated, and these copies are not signed
        documents of their own, only each message's answer read out of this one.
        """
        return [
            Receipt.model_construct(
                message_id=line.message_id,
                sha256=line.sha256,
                verdict=line.verdict,
                reason=line.reason,
                diagnostic=line.diagnostic,
                received_at=self.received_at,
                audit_index=line.audit_index,
                checkpoint=self.checkpoint,
            )
            for line in self.lines
        ]


AnyReceipt = Receipt | ReceiptBatch
RECEIPT_TYPES = frozenset({Receipt.MESSAGE_TYPE, ReceiptBatch.MESSAGE_TYPE})


def receipts_in(payload: AnyReceipt) -> list[Receipt]:
    """The per-message answers a receipt of either form gives."""
    return payload.receipts() if isinstance(payload, ReceiptBatch) else [payload]
