"""An audit log built in memory: RU's messages, batched receipts and signed checkpoints, with proofs.

For the auditor's pure checks (verification, proofs, bundles) without a store or a broker.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from uuid import UUID

from broker.audit.checkpoint import CheckpointBody, SignedCheckpoint, sign_checkpoint
from broker.audit.entry import AuditEntry, EntryDraft, EntryKind, entry_bytes, entry_leaf_hash
from broker.audit.merkle import CompactRange, inclusion_ranges, root_from_leaf_hashes
from broker.audit.proofs import InclusionProof
from broker.audit.receipt_refs import batch_drafts
from broker.core.catalogue import Payload
from broker.core.catalogue.receipt import ReceiptBatch, ReceiptLine, Verdict
from broker.core.catalogue.samples import sample_payloads
from broker.core.pki import Signer
from broker.core.sealing import seal
from broker.state.keystore import KeyStore


class Log:
    """RU's log built in memory: sealed messages, with a signed checkpoint every few entries."""

    def __init__(self, *, keys: KeyStore, start: datetime) -> None:
        self.keys = keys
        self.entries: list[AuditEntry] = []
        self._tree = CompactRange()
        self._clock = start
        self.gateway = keys.signer("RU-GW", at=start)
        self._ministry = keys.signer("RU-MVD", at=start)

    def now(self) -> datetime:
        self._clock += timedelta(seconds=1)
        return self._clock

    def add(self, draft: EntryDraft) -> AuditEntry:
        leaf = entry_leaf_hash(draft)
        entry = AuditEntry.placed(draft, index=self._tree.size, leaf_hash=leaf)
        self._tree.append(leaf)
        self.entries.append(entry)
        return entry

    def send(
        self, message_type: str, *, payload: Payload | None = None, data_key: bytes | None = None
    ) -> AuditEntry:
        """RU-MVD's message to TJ-MOL (the sample of its type unless `payload`), sealed with `data_key`."""
        sealed = seal(
            payload or sample_payloads()[message_type],
            sender="RU-MVD",
            recipient="TJ-MOL",
            signer=self._ministry,
            created_at=self.now(),
            data_key=data_key,
        )
        return self.add(
            EntryDraft(
                kind=EntryKind.SENT,
                time=self.now(),
                message_id=sealed.envelope.id,
                message_type=message_type,
                peer="TJ-MOL",
                envelope=sealed.raw,
            )
        )

    def receipt(
        self, answered: Sequence[AuditEntry], *, verdict: Verdict = Verdict.ACCEPTED
    ) -> list[AuditEntry]:
        """RU-GW's batched receipt answering `answered`, held once, with one reference per message."""
        batch = ReceiptBatch(
            received_at=self.now(),
            lines=tuple(
                ReceiptLine(
                    message_id=entry.message_id or UUID(int=0),
                    sha256=hashlib.sha256(entry.envelope).hexdigest(),
                    verdict=verdict,
                    reason=None if verdict is Verdict.ACCEPTED else "replay.stale",
                    audit_index=entry.index,
                )
                for entry in answered
            ),
        )
        sealed = seal(batch, sender="RU-GW", recipient="TJ-GW", signer=self.gateway, created_at=self.now())
        drafts = batch_drafts(
            kind=EntryKind.RECEIPT_SENT, time=self.now(), peer="TJ-GW", raw=sealed.raw,
            sha256=sealed.sha256, receipt_id=sealed.envelope.id, batch=batch,
        )  # fmt: skip
        return [self.add(draft) for draft in drafts]

    def checkpoint(self, *, signer: Signer | None = None) -> SignedCheckpoint:
        body = CheckpointBody(
            origin="RU-GW", tree_size=self._tree.size, root_hash=self._tree.root(), time=self.now()
        )
        signed = sign_checkpoint(body, signer=signer or self.gateway)
        self.add(
            EntryDraft(
                kind=EntryKind.CHECKPOINT,
                time=body.time,
                message_id=None,
                message_type=None,
                peer=None,
                envelope=signed.to_bytes(),
            )
        )
        return signed

    def node(self, start: int, end: int) -> bytes:
        return root_from_leaf_hashes(e.leaf_hash for e in self.entries[start:end])

    def inclusion(self, index: int, checkpoint: SignedCheckpoint) -> InclusionProof:
        size = checkpoint.body.tree_size
        path = tuple(self.node(a, b) for a, b in inclusion_ranges(index, size))
        return InclusionProof(
            entry=entry_bytes(self.entries[index]),
            index=index,
            tree_size=size,
            path=path,
            checkpoint=checkpoint,
        )
