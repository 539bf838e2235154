"""Batched receipts in the audit log: the signed receipt once, a reference to it per message (pure).

A `receipt.batch` answers every message of a checkpoint window with one signed envelope. A log keeps
that envelope once, in a RECEIPT_SENT (receiver) or RECEIPT_RECEIVED (sender) entry whose message id
is the receipt's own id; and for each message it answers, one entry of the same kind whose message id
is that message's, whose verdict and reason are its line's, and whose envelope is a reference: the
RFC 8785 JSON `{"in_receipt":{"id":"<receipt id>","sha256":"<hex of the receipt's bytes>"}}`.

So `find(message id)` still finds each message's receipt entry, and the reference leads to the signed
bytes a re-sent duplicate is answered with again, byte for byte. An auditor checks each reference
against the signed receipt it names (`broker.audit.verify`); `reconcile` and `bundle` read the lines
of the signed receipt itself.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from broker.audit.entry import AuditEntry, EntryDraft, EntryKind
from broker.core.canonical import canonical_bytes, strict_loads
from broker.core.catalogue import parse_payload
from broker.core.catalogue.receipt import ReceiptBatch
from broker.core.errors import ExchangeError, Reason, VerificationError

REF_MEMBER = "in_receipt"
_REF_PREFIX = b'{"' + REF_MEMBER.encode() + b'":'
RECEIPT_KINDS = frozenset({EntryKind.RECEIPT_SENT, EntryKind.RECEIPT_RECEIVED})
# Batched receipts an auditor remembers for the references that follow them (written in the same
# commit, so right behind them): far more than a gateway ever has between a receipt and its references.
RECENT_RECEIPTS = 1024
BATCH_TYPE = ReceiptBatch.MESSAGE_TYPE


@dataclass(frozen=True)
class ReceiptRef:
    """Which signed receipt answered a message: its envelope id and the SHA-256 of its bytes."""

    receipt_id: UUID
    sha256: str

    def to_bytes(self) -> bytes:
        return canonical_bytes({REF_MEMBER: {"id": str(self.receipt_id), "sha256": self.sha256}})


def is_ref(envelope: bytes) -> bool:
    """Whether stored entry bytes are a reference (a signed envelope starts with another member)."""
    return envelope.startswith(_REF_PREFIX)


def parse_ref(envelope: bytes) -> ReceiptRef:
    """The reference in stored bytes; ValueError unless it is exactly the canonical record."""
    try:
        document = strict_loads(envelope)
    except ExchangeError as exc:
        raise ValueError(f"not a receipt reference: {exc.diagnostic}") from None
    inner = document.get(REF_MEMBER) if isinstance(document, dict) and len(document) == 1 else None
    if not isinstance(inner, dict) or set(inner) != {"id", "sha256"}:
        raise ValueError('a receipt reference is {"in_receipt":{"id":..,"sha256":..}}')
    try:
        ref = ReceiptRef(receipt_id=UUID(str(inner["id"])), sha256=str(inner["sha256"]))
    except ValueError:
        raise ValueError("the receipt reference does not name a receipt id") from None
    if ref.to_bytes() != envelope:
        raise ValueError("the receipt reference is not in its canonical form")
    return ref


def batch_of(envelope: bytes) -> tuple[UUID, ReceiptBatch] | None:
    """The id and lines of a batched receipt held in stored envelope bytes, else None.

    Reads the payload only: whether the receipt was signed by whom it says is `verify`'s check.
    """
    if is_ref(envelope) or not envelope:
        return None
    try:
        document = strict_loads(envelope)
        if not isinstance(document, dict) or document.get("type") != BATCH_TYPE:
            return None
        payload = parse_payload(BATCH_TYPE, int(document["version"]), canonical_bytes(document["payload"]))
        receipt_id = UUID(str(document["id"]))
    except (ExchangeError, KeyError, TypeError, ValueError):
        return None
    assert isinstance(payload, ReceiptBatch)  # the catalogue's class for this type
    return receipt_id, payload


def answered_ids(entry: AuditEntry) -> list[UUID]:
    """The messages a receipt entry answers: a batch's lines, a single receipt's message; none for a
    reference (the batch it names is the evidence)."""
    if is_ref(entry.envelope):
        return []
    found = batch_of(entry.envelope)
    if found is not None:
        return [line.message_id for line in found[1].lines]
    return [] if entry.message_id is None else [entry.message_id]


def batch_drafts(
    *,
    kind: EntryKind,
    time: datetime,
    peer: str,
    raw: bytes,
    sha256: str,
    receipt_id: UUID,
    batch: ReceiptBatch,
    lines: Sequence[int] | None = None,
) -> list[EntryDraft]:
    """The entry holding a batched receipt's bytes, then one reference entry per line (or per line in
    `lines`, by position: a sender that has seen these bytes before needs no new references)."""
    drafts = [
        EntryDraft(
            kind=kind,
            time=time,
            message_id=receipt_id,
            message_type=BATCH_TYPE,
            peer=peer,
            envelope=raw,
        )
    ]
    ref = ReceiptRef(receipt_id=receipt_id, sha256=sha256).to_bytes()
    chosen = range(len(batch.lines)) if lines is None else lines
    drafts += [
        EntryDraft(
            kind=kind,
            time=time,
            message_id=batch.lines[position].message_id,
            message_type=BATCH_TYPE,
            peer=peer,
            envelope=ref,
            verdict=batch.lines[position].verdict,
            reason=batch.lines[position].reason,
        )
        for position in chosen
    ]
    return drafts


# Per receipt: its entry kind, its peer, the sha256 of its bytes, and each line's answers by message.
_Known = tuple[EntryKind, str, str, dict[UUID, set[tuple[str, str | None]]]]


class RecentReceipts:
    """The auditor's memory of the batched receipts just read, to check the references behind them."""

    def __init__(self, capacity: int = RECENT_RECEIPTS) -> None:
        self._known: OrderedDict[UUID, _Known] = OrderedDict()
        self._capacity = capacity
        self.refs_checked = 0

    def remember(self, entry: AuditEntry) -> None:
        found = batch_of(entry.envelope)
        if found is None:
            raise VerificationError(Reason.AUDIT_TAMPERED, "the stored batched receipt does not parse")
        receipt_id, batch = found
        answers: dict[UUID, set[tuple[str, str | None]]] = {}
        for line in batch.lines:
            answers.setdefault(line.message_id, set()).add((str(line.verdict), line.reason))
        self._known[receipt_id] = (
            entry.kind,
            str(entry.peer),
            hashlib.sha256(entry.envelope).hexdigest(),
            answers,
        )
        while len(self._known) > self._capacity:
            self._known.popitem(last=False)

    def check_ref(self, entry: AuditEntry, *, some_hash_only: bool) -> None:
        """A message's reference to the batched receipt that answered it: that receipt stands before it
        in this log, with these bytes, of the same kind and peer, and lists it with this verdict.

        `some_hash_only`: entries before it were checked by hash only (archived), so its receipt may
        be among them."""
        try:
            ref = parse_ref(entry.envelope)
        except ValueError as exc:
            raise VerificationError(Reason.AUDIT_TAMPERED, f"the receipt reference: {exc}") from None
        known = self._known.get(ref.receipt_id)
        if known is None:
            if some_hash_only:
                self.refs_checked += 1
                return
            raise VerificationError(
                Reason.AUDIT_TAMPERED,
                f"it names receipt {ref.receipt_id}, which this log does not hold before it",
            )
        kind, peer, sha256, answers = known
        if (
            ref.sha256 != sha256
            or kind != entry.kind
            or peer != entry.peer
            or entry.message_type != BATCH_TYPE
        ):
            raise VerificationError(
                Reason.AUDIT_TAMPERED, f"it does not match receipt {ref.receipt_id} as this log holds it"
            )
        if entry.message_id is None or (str(entry.verdict), entry.reason) not in answers.get(
            entry.message_id, ()
        ):
            raise VerificationError(
                Reason.AUDIT_TAMPERED,
                f"receipt {ref.receipt_id} gives message {entry.message_id} no {entry.verdict} {entry.reason or ''}".rstrip(),
            )
        self.refs_checked += 1
