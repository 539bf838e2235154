"""The receiving gateway's answer to every message: accepted, or rejected with a reason code."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Self
from uuid import UUID

from pydantic import Field, model_validator

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
