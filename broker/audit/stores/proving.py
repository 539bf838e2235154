"""Inclusion proofs out of a log source: the checkpoint that covers an entry, and the proof under it.

Shared by `broker audit prove|bundle|verify` and the HTTP API's proof endpoint, so both hand out the
same proof file for the same entry. A receipt entry that only references a batched receipt
(`receipt_refs`) is proved through the signed receipt that lists it.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from broker.audit.checkpoint import SignedCheckpoint
from broker.audit.entry import AuditEntry, EntryKind, entry_bytes
from broker.audit.proofs import InclusionProof
from broker.audit.receipt_refs import RECEIPT_KINDS, is_ref, parse_ref
from broker.audit.stores.archive_files import ArchiveDirectory, whole_entry
from broker.audit.stores.source import LogSource, inclusion_proof
from broker.core.errors import AuditError, ExchangeError, Reason


async def entries_of(source: LogSource, **where: Any) -> list[AuditEntry]:
    """Readable entries selected by kind and/or message id (unreadable rows are `verify`'s business)."""
    return [row async for row in source.select(**where) if isinstance(row, AuditEntry)]


async def checkpoints_of(source: LogSource) -> list[SignedCheckpoint]:
    found = []
    for entry in await entries_of(source, kind=EntryKind.CHECKPOINT):
        try:
            found.append(SignedCheckpoint.from_bytes(entry.envelope))
        except ExchangeError:
            continue  # a broken checkpoint is reported by `verify`, not used here
    return found


async def covering_checkpoint(source: LogSource, index: int) -> SignedCheckpoint:
    candidates = [cp for cp in await checkpoints_of(source) if cp.body.tree_size > index]
    if not candidates:
        raise AuditError(
            Reason.AUDIT_NOT_COVERED,
            f"entry {index} is newer than every signed checkpoint in {source.name}; "
            f"snapshot the store again after the gateway's next checkpoint",
        )
    return max(candidates, key=lambda cp: cp.body.tree_size)


async def prove_entry(source: LogSource, entry: AuditEntry, checkpoint: SignedCheckpoint) -> InclusionProof:
    size = checkpoint.body.tree_size
    return InclusionProof(
        entry=entry_bytes(entry),
        index=entry.index,
        tree_size=size,
        path=tuple(await inclusion_proof(source, entry.index, size)),
        checkpoint=checkpoint,
    )


async def prove_message(
    source: LogSource, message_id: UUID, kind: EntryKind, *, archive: ArchiveDirectory | None = None
) -> InclusionProof:
    """The proof of the first `kind` entry about `message_id`, against the latest checkpoint covering it."""
    entries = await entries_of(source, kind=kind, message_id=message_id)
    if not entries:
        raise AuditError(Reason.AUDIT_OUT_OF_RANGE, f"no {kind} entry for message {message_id}")
    entry = await whole_entry(source, entries[0], archive=archive)
    if entry.kind in RECEIPT_KINDS and is_ref(entry.envelope):
        # The message was answered in a batched receipt: prove the signed receipt that lists it.
        receipt_id = parse_ref(entry.envelope).receipt_id
        holding = await entries_of(source, kind=kind, message_id=receipt_id)
        if not holding:
            raise AuditError(Reason.AUDIT_OUT_OF_RANGE, f"no {kind} entry for receipt {receipt_id}")
        entry = await whole_entry(source, holding[0], archive=archive)
    covering = await covering_checkpoint(source, entry.index)
    return await prove_entry(source, entry, covering)
