"""Classify every message of a chaos run from the durable records both sides keep.

Ground truth is on disk, not in test memory: the sender's outbox (what the ministry handed over and
the state its receipt left it in), the receiver's audit log (what was received, delivered and
receipted) and the subscriber's ledger (what the consul was handed). Jepsen's classes:

- lost: handed to the sending gateway (in its outbox) but not received, receipted and delivered;
- duplicated: received or delivered twice by the gateway, handed to the consul twice, or receipted
  twice with different bytes;
- unexpected: anything received, delivered or rejected that the sender never sent.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

# Gateways hand each other countersignatures of their audit checkpoints (`checkpoint.witness`):
# their own traffic, never in an outbox nor receipted, so sent and received ones are left out here
# (a rejected one still counts: it is an alarm).
NOT_WITNESS = "AND NOT (kind IN ('sent', 'received') AND message_type IS 'checkpoint.witness')"


def _rows(path: Path, sql: str) -> list[tuple[str, ...]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return [tuple(str(value) for value in row) for row in db.execute(sql)]


@dataclass(frozen=True)
class Direction:
    """One way across the border: who sends, who receives, which consulate is handed the alerts."""

    name: str
    sender_state: Path  # <workdir>/<cc> of the sending gateway
    receiver_state: Path
    subscriber_ledger: Path


@dataclass(frozen=True)
class DirectionVerdict:
    name: str
    sent: int
    receipted: int
    received: int
    delivered_to_subscriber: int
    lost: int
    duplicated: int
    unexpected: int
    resent: int
    redelivered_to_subscriber: int
    rejected_by_receiver: int
    # Messages the sender's audit log and outbox disagree on: `sent` without an outbox row or back.
    audit_outbox_mismatch: int

    def as_dict(self) -> dict[str, int | str]:
        return asdict(self)


def classify(direction: Direction) -> DirectionVerdict:
    outbox = _rows(direction.sender_state / "outbox.sqlite", "SELECT message_id, state, attempts FROM outbox")
    sent_ids = {message_id for message_id, _, _ in outbox}
    receipted = {message_id for message_id, state, _ in outbox if state == "receipted"}
    resent = sum(1 for _, _, attempts in outbox if int(attempts) > 1)
    sender_audit = _rows(
        direction.sender_state / "audit.sqlite",
        "SELECT kind, message_id, hex(envelope) FROM audit_entries "
        f"WHERE kind IN ('sent', 'receipt-received') {NOT_WITNESS}",
    )
    audited_sent = {message_id for kind, message_id, _ in sender_audit if kind == "sent"}
    receipts: dict[str, set[str]] = {}
    for kind, message_id, envelope in sender_audit:
        if kind == "receipt-received":
            receipts.setdefault(message_id, set()).add(envelope)
    receiver_audit = _rows(
        direction.receiver_state / "audit.sqlite",
        "SELECT kind, message_id FROM audit_entries "
        f"WHERE kind IN ('received', 'delivered', 'rejected') {NOT_WITNESS}",
    )
    by_kind: dict[str, Counter[str]] = {"received": Counter(), "delivered": Counter(), "rejected": Counter()}
    for kind, message_id in receiver_audit:
        by_kind[kind][message_id] += 1
    deliveries = Counter(
        message_id
        for (message_id,) in _rows(direction.subscriber_ledger, "SELECT message_id FROM deliveries")
    )
    handed = Counter(
        message_id for (message_id,) in _rows(direction.subscriber_ledger, "SELECT message_id FROM handed")
    )
    complete = receipted & set(by_kind["received"]) & set(by_kind["delivered"]) & set(handed)
    duplicated = {
        message_id
        for counter in (by_kind["received"], by_kind["delivered"], handed)
        for message_id, times in counter.items()
        if times > 1
    } | {message_id for message_id, copies in receipts.items() if len(copies) > 1}
    seen_by_receiver = set(by_kind["received"]) | set(by_kind["delivered"]) | set(handed)
    unexpected = (seen_by_receiver - sent_ids) | set(by_kind["rejected"])
    return DirectionVerdict(
        name=direction.name,
        sent=len(sent_ids),
        receipted=len(receipted),
        received=len(by_kind["received"]),
        delivered_to_subscriber=len(handed),
        lost=len(sent_ids - complete),
        duplicated=len(duplicated),
        unexpected=len(unexpected),
        resent=resent,
        redelivered_to_subscriber=sum(times - 1 for times in deliveries.values()),
        rejected_by_receiver=sum(by_kind["rejected"].values()),
        audit_outbox_mismatch=len(audited_sent ^ sent_ids),
    )


def progress(direction: Direction) -> tuple[int, int, int]:
    """(in the outbox, receipted, handed to the consul), read while the run is going on."""
    try:
        outbox = _rows(direction.sender_state / "outbox.sqlite", "SELECT state FROM outbox")
        handed = _rows(direction.subscriber_ledger, "SELECT message_id FROM handed")
    except sqlite3.Error:
        return 0, 0, 0
    return len(outbox), sum(1 for (state,) in outbox if state == "receipted"), len(handed)
