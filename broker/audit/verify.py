"""Verify a whole audit log from its entries, as an auditor who trusts neither side's operators.

Pure: entries come in one at a time (`LogVerifier.feed`), in index order, from wherever the caller
reads them. For each entry: its position, its leaf hash recomputed from the stored record, the
signature of the envelope it holds (trust judged at the message time, as for an auditor), and for a
CHECKPOINT entry the signed root compared with the root recomputed from the leaves. Checkpoints the
peer witnessed are compared the same way, which is what catches a log rewritten and re-signed with
the operator's own key, or cut short: those the peer handed back (RECEIVED `checkpoint.witness`
entries of this log), those in the peer's log (`witnessed_checkpoints`) and those an auditor kept.

The first failure stops verification: after it, every later check would only repeat it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence

from broker.audit.bounded import parse_bounded
from broker.audit.checkpoint import SignedCheckpoint, WitnessRecord, verify_checkpoint, verify_witness
from broker.audit.entry import AuditEntry, EntryKind, entry_leaf_hash
from broker.audit.merkle import EMPTY_ROOT, HASH_SIZE, CompactRange, fold_cover
from broker.audit.receipt_refs import BATCH_TYPE, RECEIPT_KINDS, RecentReceipts, is_ref
from broker.audit.rows import ArchivedRow, ExternalCheckpoint, Finding, UnreadableRow, VerifyReport
from broker.audit.stored_envelopes import SIGNED_KINDS, expected_peer, subject_id, verify_envelope
from broker.audit.witnessing import WITNESS_TYPE, countersigned_record
from broker.core.canonical import canonical_bytes
from broker.core.catalogue import parse_payload
from broker.core.catalogue.witness import CheckpointWitness
from broker.core.envelope import Envelope
from broker.core.errors import ExchangeError, Reason, VerificationError
from broker.core.trust import TrustStore

# How far behind its own position a checkpoint may name the tree: entries appended by other writers
# while it was being signed. The checkpointer keeps this to a handful.
CHECKPOINT_LAG_WINDOW = 65536


class LogVerifier:
    def __init__(
        self,
        *,
        trust: TrustStore,
        origin: str | None = None,
        external: Sequence[ExternalCheckpoint] = (),
        lag_window: int = CHECKPOINT_LAG_WINDOW,
    ) -> None:
        self._trust = trust
        self._origin = origin
        self._tree = CompactRange()
        self._recent: deque[tuple[bytes, ...]] = deque([()], maxlen=lag_window + 1)
        self._external = sorted(external, key=lambda item: item.checkpoint.body.tree_size)
        for item in self._external:
            verify_checkpoint(item.checkpoint, trust=trust, origin=origin)
        self._next_external = 0
        # The largest size known good: every entry below it is vouched for by a signed root.
        self._vouched_size = 0
        # The same, counting only roots the peer signed: the operator cannot re-sign those.
        self._peer_vouched_size = 0
        self.finding: Finding | None = None
        self.checkpoints = 0
        self.envelopes = 0
        self.witnesses = 0
        self.countersigned = 0
        self.hash_only = 0
        self.latest_checkpoint: SignedCheckpoint | None = None
        self._receipts = RecentReceipts()

    @property
    def size(self) -> int:
        return self._tree.size

    @property
    def receipt_refs(self) -> int:
        return self._receipts.refs_checked

    def feed(self, item: AuditEntry | UnreadableRow | ArchivedRow) -> Finding | None:
        """Check one more entry; once something failed, further entries are ignored."""
        if self.finding is None:
            self.finding = self._check(item)
        return self.finding

    def finish(self) -> VerifyReport:
        if self.finding is None:
            self.finding = self._check_external_beyond_end()
        return VerifyReport(
            size=self._tree.size,
            root=self._tree.root() if self._tree.size else EMPTY_ROOT,
            origin=self._origin,
            checkpoints=self.checkpoints,
            envelopes=self.envelopes,
            witnesses=self.witnesses,
            countersigned=self.countersigned,
            external_matched=self._next_external,
            latest_checkpoint=self.latest_checkpoint,
            finding=self.finding,
            hash_only=self.hash_only,
        )

    # -- the checks --------------------------------------------------------------------------------

    def _check(self, item: AuditEntry | UnreadableRow | ArchivedRow) -> Finding | None:
        index = self._tree.size
        if isinstance(item, UnreadableRow):
            return Finding(index=item.index, reason=item.reason, diagnostic=item.diagnostic)
        if item.index != index:
            what = "missing" if item.index > index else "out of order or duplicated"
            return Finding(
                index=index,
                reason=Reason.AUDIT_TAMPERED,
                diagnostic=f"expected entry {index} but the next stored entry is {item.index}: entries {what}",
            )
        if isinstance(item, ArchivedRow):
            return self._check_hash_only(item)
        leaf = entry_leaf_hash(item)
        if leaf != item.leaf_hash:
            return Finding(
                index=index,
                reason=Reason.AUDIT_TAMPERED,
                diagnostic="the stored record does not hash to its stored leaf hash: the row was edited",
            )
        finding = self._check_external_at(index) or self._check_content(item)
        if finding is not None:
            return finding
        self._tree.append(leaf)
        self._recent.append(tuple(self._tree.border))
        return None

    def _check_hash_only(self, item: ArchivedRow) -> Finding | None:
        if len(item.leaf_hash) != HASH_SIZE:
            return Finding(
                index=item.index,
                reason=Reason.AUDIT_TAMPERED,
                diagnostic="the stored leaf hash is not a SHA-256",
            )
        finding = self._check_external_at(item.index)
        if finding is not None:
            return finding
        self._tree.append(item.leaf_hash)
        self._recent.append(tuple(self._tree.border))
        self.hash_only += 1
        return None

    def _root_at(self, size: int) -> bytes | None:
        back = self._tree.size - size
        if not 0 <= back < len(self._recent):
            return None
        return fold_cover(self._recent[len(self._recent) - 1 - back])

    def _check_external_at(self, size: int) -> Finding | None:
        """Compare every externally vouched checkpoint of exactly `size` with the current root."""
        while self._next_external < len(self._external):
            item = self._external[self._next_external]
            if item.checkpoint.body.tree_size != size:
                break
            if fold_cover(self._tree.border) != item.checkpoint.body.root_hash:
                return self._disagreement(item, size)
            self._vouch(size)
            self._peer_vouched_size = max(self._peer_vouched_size, size)
            self._next_external += 1
        return None

    def _check_external_beyond_end(self) -> Finding | None:
        finding = self._check_external_at(self._tree.size)
        if finding is not None or self._next_external == len(self._external):
            return finding
        item = self._external[self._next_external]
        return Finding(
            index=self._tree.size,
            reason=Reason.AUDIT_WITNESS_MISMATCH,
            diagnostic=(
                f"the log ends after {self._tree.size} entries but {item.source} vouches for a tree of "
                f"{item.checkpoint.body.tree_size} entries: the log was truncated"
            ),
        )

    def _disagreement(self, item: ExternalCheckpoint, size: int) -> Finding:
        # Only roots the peer or an auditor vouched for bound the range: the log's own checkpoints
        # may have been re-signed along with the rewrite.
        return Finding(
            index=self._peer_vouched_size,
            reason=Reason.AUDIT_WITNESS_MISMATCH,
            diagnostic=(
                f"{item.source} vouches for root {item.checkpoint.body.root_hash.hex()} at size {size}, "
                f"but the stored entries [{self._peer_vouched_size}, {size}) give another root: "
                f"they were rewritten after that checkpoint was witnessed"
            ),
        )

    def _vouch(self, size: int) -> None:
        self._vouched_size = max(self._vouched_size, size)

    def _check_content(self, entry: AuditEntry) -> Finding | None:
        try:
            if entry.kind in RECEIPT_KINDS and is_ref(entry.envelope):
                self._receipts.check_ref(entry, some_hash_only=self.hash_only > 0)
            elif entry.kind in SIGNED_KINDS:
                envelope = self._check_envelope(entry)
                if envelope.type == BATCH_TYPE:
                    self._receipts.remember(entry)
                if entry.kind is EntryKind.RECEIVED and envelope.type == WITNESS_TYPE:
                    return self._check_countersigned(entry, envelope)
            elif entry.kind is EntryKind.CHECKPOINT:
                return self._check_checkpoint(entry)
            elif entry.kind is EntryKind.WITNESS:
                self._check_witness(entry)
            elif entry.kind is EntryKind.REJECTED:
                _check_rejected(entry)
        except ExchangeError as error:
            return Finding(
                index=entry.index,
                reason=error.reason,
                diagnostic=f"{entry.kind} entry: {error.diagnostic}",
            )
        return None

    def _check_envelope(self, entry: AuditEntry) -> Envelope:
        envelope, _ = verify_envelope(entry.envelope, trust=self._trust)
        recorded = {
            "message id": (str(entry.message_id), subject_id(entry.kind, envelope)),
            "type": (entry.message_type, envelope.type),
            "peer": (entry.peer, expected_peer(entry.kind, envelope)),
        }
        for name, (stored, signed) in recorded.items():
            if stored != signed:
                raise VerificationError(
                    Reason.AUDIT_TAMPERED, f"the entry's {name} {stored!r} is not the signed {signed!r}"
                )
        self.envelopes += 1
        return envelope

    def _check_countersigned(self, entry: AuditEntry, envelope: Envelope) -> Finding | None:
        """The peer's countersignature of one of our checkpoints: the root must be this log's."""
        payload = parse_payload(envelope.type, envelope.version, canonical_bytes(envelope.payload))
        assert isinstance(payload, CheckpointWitness)  # the catalogue's class for this type
        record = countersigned_record(
            payload, sender=envelope.sender, origin=self._origin or envelope.recipient, trust=self._trust
        )
        size, signed_root = record.checkpoint.body.tree_size, record.checkpoint.body.root_hash
        root = self._root_at(size)
        if size > self._tree.size:
            return Finding(
                index=entry.index,
                reason=Reason.AUDIT_WITNESS_MISMATCH,
                diagnostic=(
                    f"{record.witness} countersigned a checkpoint of {size} entries, but it stands at "
                    f"position {entry.index}: entries before it were removed or moved"
                ),
            )
        if root is not None and root != signed_root:
            return Finding(
                index=self._peer_vouched_size,
                reason=Reason.AUDIT_WITNESS_MISMATCH,
                diagnostic=(
                    f"{record.witness} countersigned root {signed_root.hex()} at size {size} (entry "
                    f"{entry.index}), but the stored entries [{self._peer_vouched_size}, {size}) give "
                    f"another root: they were rewritten after the peer witnessed them"
                ),
            )
        if root is not None:  # else older than the lag window: the gateway compared it on arrival
            self._vouch(size)
            self._peer_vouched_size = max(self._peer_vouched_size, size)
            self.countersigned += 1
        return None

    def _check_checkpoint(self, entry: AuditEntry) -> Finding | None:
        signed = SignedCheckpoint.from_bytes(entry.envelope)
        verify_checkpoint(signed, trust=self._trust, origin=self._origin)
        self._origin = signed.body.origin
        size = signed.body.tree_size
        if size > entry.index:
            raise VerificationError(
                Reason.AUDIT_CHECKPOINT_INVALID,
                f"the checkpoint names {size} entries but stands at position {entry.index}: entries "
                f"before it were removed or moved",
            )
        root = self._root_at(size)
        if root is None:
            raise VerificationError(
                Reason.AUDIT_CHECKPOINT_INVALID,
                f"the checkpoint names size {size}, more than {self._recent.maxlen} entries behind it",
            )
        if root != signed.body.root_hash:
            return Finding(
                index=self._vouched_size,
                reason=Reason.AUDIT_TAMPERED,
                diagnostic=(
                    f"the stored entries [{self._vouched_size}, {size}) do not hash to the root signed "
                    f"by the checkpoint at entry {entry.index}: an entry among them was changed, "
                    f"removed, inserted or moved"
                ),
            )
        self._vouch(size)
        self.checkpoints += 1
        self.latest_checkpoint = signed
        return None

    def _check_witness(self, entry: AuditEntry) -> None:
        record = WitnessRecord.from_bytes(entry.envelope)
        verify_witness(record, trust=self._trust)
        if self._origin is not None and record.witness != self._origin:
            raise VerificationError(
                Reason.CERT_AUTHORITY_MISMATCH,
                f"countersigned by {record.witness}, not by this log's gateway {self._origin}",
            )
        self.witnesses += 1


def _check_rejected(entry: AuditEntry) -> None:
    """A rejected body is kept whole or as a bounded record (`broker.audit.bounded`), never a mangled one."""
    try:
        parse_bounded(entry.envelope)
    except ValueError as exc:
        raise VerificationError(Reason.AUDIT_TAMPERED, f"the stored bounded body: {exc}") from None


def witnessed_checkpoints(
    entries: Iterable[AuditEntry | UnreadableRow], *, origin: str, trust: TrustStore, source: str
) -> list[ExternalCheckpoint]:
    """The checkpoints of `origin`'s log countersigned in a peer's log, each signature checked."""
    found: list[ExternalCheckpoint] = []
    for entry in entries:
        if isinstance(entry, UnreadableRow) or entry.kind is not EntryKind.WITNESS:
            continue
        record = WitnessRecord.from_bytes(entry.envelope)
        if record.checkpoint.body.origin != origin:
            continue
        verify_witness(record, trust=trust)
        found.append(
            ExternalCheckpoint(
                checkpoint=record.checkpoint,
                source=f"{record.witness} (entry {entry.index} of {source})",
            )
        )
    return found


def verify_log(
    entries: Iterable[AuditEntry | UnreadableRow | ArchivedRow],
    *,
    trust: TrustStore,
    origin: str | None = None,
    external: Sequence[ExternalCheckpoint] = (),
    on_entry: Callable[[int], None] | None = None,
) -> VerifyReport:
    verifier = LogVerifier(trust=trust, origin=origin, external=external)
    for entry in entries:
        if verifier.feed(entry) is not None:
            break
        if on_entry is not None:
            on_entry(verifier.size)
    return verifier.finish()


__all__ = [
    "CHECKPOINT_LAG_WINDOW",
    "SIGNED_KINDS",
    "ArchivedRow",
    "ExternalCheckpoint",
    "Finding",
    "LogVerifier",
    "UnreadableRow",
    "VerifyReport",
    "verify_envelope",
    "verify_log",
    "witnessed_checkpoints",
]
