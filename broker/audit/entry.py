"""Audit log entries and their canonical bytes (pure: no I/O).

The Merkle leaf of an entry is the hash of `entry_bytes(draft)`: RFC 8785 canonical JSON of every
field, the time included, so that no stored column can change without changing the tree. The index
is not part of the record: the tree itself fixes each leaf's position.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from json.encoder import encode_basestring
from uuid import UUID

from broker.audit.merkle import leaf_hash
from broker.core.canonical import canonical_bytes

# Bumped if the record layout ever changes, so old leaves stay verifiable under their own rules.
ENTRY_FORMAT = 1


class EntryKind(StrEnum):
    SENT = "sent"
    RECEIVED = "received"
    REJECTED = "rejected"
    RECEIPT_SENT = "receipt-sent"
    RECEIPT_RECEIVED = "receipt-received"
    DELIVERED = "delivered"
    CHECKPOINT = "checkpoint"
    WITNESS = "witness"
    TRUST_UPDATE = "trust-update"


@dataclass(frozen=True, kw_only=True)
class EntryDraft:
    """What a gateway asks the log to record; the store gives it an index."""

    kind: EntryKind
    time: datetime
    message_id: UUID | None
    message_type: str | None
    peer: str | None
    envelope: bytes
    verdict: str | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        # Normalising here means two drafts of the same instant always hash alike.
        object.__setattr__(self, "kind", EntryKind(self.kind))
        if self.time.tzinfo is None or self.time.utcoffset() is None:
            raise ValueError("audit entry time must be timezone-aware")
        object.__setattr__(self, "time", self.time.astimezone(UTC))
        if not isinstance(self.envelope, bytes):
            raise TypeError("audit entry envelope must be bytes")
        for name in ("message_type", "peer", "verdict", "reason"):
            value = getattr(self, name)
            if value is not None:
                # Lone surrogates cannot be canonicalised; refuse them before they reach a store.
                value.encode("utf-8")


@dataclass(frozen=True, kw_only=True)
class AuditEntry(EntryDraft):
    """A recorded entry: its position in the log and the leaf hash stored with it."""

    index: int
    leaf_hash: bytes = field(repr=False)

    @classmethod
    def placed(cls, draft: EntryDraft, *, index: int, leaf_hash: bytes) -> AuditEntry:
        return cls(
            kind=draft.kind,
            time=draft.time,
            message_id=draft.message_id,
            message_type=draft.message_type,
            peer=draft.peer,
            envelope=draft.envelope,
            verdict=draft.verdict,
            reason=draft.reason,
            index=index,
            leaf_hash=leaf_hash,
        )

    def draft(self) -> EntryDraft:
        return EntryDraft(
            kind=self.kind,
            time=self.time,
            message_id=self.message_id,
            message_type=self.message_type,
            peer=self.peer,
            envelope=self.envelope,
            verdict=self.verdict,
            reason=self.reason,
        )

    def leaf_hash_matches(self) -> bool:
        """Whether the stored leaf hash is the hash of the stored fields (detects an edited row)."""
        return entry_leaf_hash(self) == self.leaf_hash


def format_time(time: datetime) -> str:
    """RFC 3339 in UTC with microseconds and `Z`: one spelling per instant."""
    utc = time.astimezone(UTC)
    if utc.year < 1000:  # isoformat pads the year to four digits, strftime on glibc does not
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def entry_record(draft: EntryDraft) -> dict[str, str | int | None]:
    """The record whose RFC 8785 form is the leaf input."""
    return {
        "v": ENTRY_FORMAT,
        "kind": str(draft.kind),
        "time": format_time(draft.time),
        "message_id": str(draft.message_id) if draft.message_id is not None else None,
        "message_type": draft.message_type,
        "peer": draft.peer,
        "envelope": base64.b64encode(draft.envelope).decode("ascii"),
        "verdict": draft.verdict,
        "reason": draft.reason,
    }


def _member_value(key: str, value: str | int | None) -> str:
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if key == "envelope":
        return f'"{value}"'  # base64: nothing to escape
    return encode_basestring(value)


def entry_bytes(draft: EntryDraft) -> bytes:
    """Canonical bytes of the record: the Merkle leaf input.

    The record's members are joined in RFC 8785's key order (the keys are ASCII, so plain sorting is
    that order) with only the short strings escaped: serialising the dict whole would scan the
    base64 envelope for characters to escape, and it has none. This is the auditor's and the
    writer's hottest line; `tests/audit/test_audit_entry_bytes.py` checks it against `canonical_bytes`.
    """
    record = entry_record(draft)
    members = ",".join(f'"{key}":{_member_value(key, record[key])}' for key in sorted(record))
    try:
        return ("{" + members + "}").encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: the reference path gives the precise refusal
        return canonical_bytes(record)


def entry_leaf_hash(draft: EntryDraft) -> bytes:
    return leaf_hash(entry_bytes(draft))


__all__ = [
    "ENTRY_FORMAT",
    "AuditEntry",
    "EntryDraft",
    "EntryKind",
    "entry_bytes",
    "entry_leaf_hash",
    "format_time",
    "leaf_hash",
]
