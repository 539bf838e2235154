"""Reconcile one country's audit log against the other's (pure).

Every message one side sent must appear on the other side as received (or rejected) with the same
bytes, and the other side must have sent a receipt for it (except for the message types a gateway
never answers: receipts and witness countersignatures); and nothing may have been received that the
other side never sent. Each gap is listed with the index of the entry that exposes it.

A gateway with several peers (one agreement each) keeps one log for all of them: reconciling it
against one peer's log looks only at the entries exchanged with that peer (`between`), by the
country of the authority each entry names (an authority id starts with its country's code).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from uuid import UUID

from broker.audit.bounded import body_digest
from broker.audit.entry import AuditEntry, EntryKind
from broker.audit.receipt_refs import answered_ids
from broker.audit.rows import UnreadableRow
from broker.audit.witnessing import UNANSWERED_TYPES


@dataclass(frozen=True, kw_only=True)
class Seen:
    index: int
    message_type: str | None
    sha256: str


@dataclass(kw_only=True)
class LogDigest:
    """What reconciling needs from one log, keyed by message id."""

    name: str
    sent: dict[UUID, Seen] = field(default_factory=dict)
    received: dict[UUID, Seen] = field(default_factory=dict)
    rejected: dict[UUID, Seen] = field(default_factory=dict)
    receipts_sent: set[UUID] = field(default_factory=set)

    def add(self, entry: AuditEntry | UnreadableRow) -> None:
        if isinstance(entry, UnreadableRow) or entry.message_id is None:
            return
        # A rejected body may be kept bounded: its record names the whole body's hash.
        sha256 = (
            body_digest(entry.envelope)[0]
            if entry.kind is EntryKind.REJECTED
            else hashlib.sha256(entry.envelope).hexdigest()
        )
        seen = Seen(index=entry.index, message_type=entry.message_type, sha256=sha256)
        by_kind = {
            EntryKind.SENT: self.sent,
            EntryKind.RECEIVED: self.received,
            EntryKind.REJECTED: self.rejected,
        }
        target = by_kind.get(entry.kind)
        if target is not None:
            target.setdefault(entry.message_id, seen)
        elif entry.kind is EntryKind.RECEIPT_SENT:
            # A batched receipt answers every message it lists; a message's reference to it adds nothing.
            self.receipts_sent.update(answered_ids(entry))


def digest(
    name: str, entries: Iterable[AuditEntry | UnreadableRow], *, between: Collection[str] = ()
) -> LogDigest:
    """What reconciling needs of a log; with `between` (two country codes), only the entries whose
    peer is an authority of one of them (a rejected message naming nobody is kept)."""
    result = LogDigest(name=name)
    for entry in entries:
        if between and isinstance(entry, AuditEntry) and entry.peer and entry.peer[:2] not in between:
            continue
        result.add(entry)
    return result


@dataclass(frozen=True, kw_only=True)
class Gap:
    message_id: UUID
    message_type: str | None
    log: str  # the log whose entry exposes the gap
    index: int
    problem: str

    def __str__(self) -> str:
        return f"{self.message_id} ({self.message_type}) at {self.log} entry {self.index}: {self.problem}"


def _one_way(sender: LogDigest, receiver: LogDigest) -> list[Gap]:
    gaps: list[Gap] = []
    for message_id, sent in sender.sent.items():

        def gap(problem: str, *, sent: Seen = sent, message_id: UUID = message_id) -> Gap:
            return Gap(
                message_id=message_id,
                message_type=sent.message_type,
                log=sender.name,
                index=sent.index,
                problem=problem,
            )

        arrived = receiver.received.get(message_id) or receiver.rejected.get(message_id)
        if arrived is None:
            gaps.append(gap(f"sent, but {receiver.name} has no received or rejected entry for it"))
        elif message_id in receiver.received and arrived.sha256 != sent.sha256:
            gaps.append(gap(f"{receiver.name} received other bytes under this id (entry {arrived.index})"))
        if message_id not in receiver.receipts_sent and sent.message_type not in UNANSWERED_TYPES:
            gaps.append(gap(f"{receiver.name} has no receipt-sent entry for it"))
    for message_id, received in receiver.received.items():
        if message_id not in sender.sent:
            gaps.append(
                Gap(
                    message_id=message_id,
                    message_type=received.message_type,
                    log=receiver.name,
                    index=received.index,
                    problem=f"received, but {sender.name} has no sent entry for it",
                )
            )
    return gaps


def reconcile(a: LogDigest, b: LogDigest) -> list[Gap]:
    """Every gap in both directions, ordered by log and entry index."""
    gaps = _one_way(a, b) + _one_way(b, a)
    return sorted(gaps, key=lambda item: (item.log != a.name, item.index, item.problem))
