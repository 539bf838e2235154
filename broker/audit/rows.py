"""What an auditor's reading of a log yields: rows that are entries, unreadable or archived; findings; the report."""

from __future__ import annotations

from dataclasses import dataclass

from broker.audit.checkpoint import SignedCheckpoint
from broker.audit.entry import AuditEntry
from broker.core.errors import Reason


@dataclass(frozen=True)
class UnreadableRow:
    """A stored row that cannot even be turned into an entry (an edited kind, time or id), or whose
    archived record cannot be had (`reason` then says why: a missing or altered segment file)."""

    index: int
    diagnostic: str
    reason: Reason = Reason.AUDIT_TAMPERED


@dataclass(frozen=True)
class ArchivedRow:
    """A compacted entry (broker/audit/archive.py) whose record is in an archive segment not at hand:
    it counts by its stored leaf hash, which the signed roots still cover, and nothing else is checked.
    `stored` is the row as the store holds it, its envelope empty."""

    stored: AuditEntry
    segment: str

    @property
    def index(self) -> int:
        return self.stored.index

    @property
    def leaf_hash(self) -> bytes:
        return self.stored.leaf_hash


@dataclass(frozen=True, kw_only=True)
class Finding:
    index: int
    reason: Reason
    diagnostic: str

    def __str__(self) -> str:
        return f"entry {self.index}: [{self.reason}] {self.diagnostic}"


@dataclass(frozen=True, kw_only=True)
class ExternalCheckpoint:
    """A checkpoint of this log vouched for outside it: `source` says by whom, for the diagnostic."""

    checkpoint: SignedCheckpoint
    source: str


@dataclass(kw_only=True)
class VerifyReport:
    size: int
    root: bytes
    origin: str | None
    checkpoints: int
    envelopes: int
    witnesses: int
    countersigned: int  # our checkpoints the peer countersigned and handed back, matched here
    external_matched: int
    latest_checkpoint: SignedCheckpoint | None
    finding: Finding | None
    hash_only: int = 0  # compacted entries checked by their leaf hash alone (no archive at hand)

    @property
    def ok(self) -> bool:
        return self.finding is None
