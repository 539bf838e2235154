"""The operator's `archive` and `compact` (I/O edge): segment files out of a log, then envelopes out
of the store, each step only after the one before it was checked from disk.

`archive_range` writes the entries [first unarchived, up_to) as a segment file and its manifest,
fsyncs both, reads them back, checks them against their manifest, the signed checkpoint and the
store's leaf hashes, and only then records the range in the store. `compact_archived` empties the
envelopes of recorded ranges, each only after its segment was read from disk and checked again,
entry by entry, against the store's rows.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from broker.audit.archive import (
    KEPT_KINDS,
    ArchivedRange,
    SegmentInvalid,
    SegmentManifest,
    build_segment,
    check_compaction_age,
    check_segment,
    segment_name,
)
from broker.audit.checkpoint import SignedCheckpoint, verify_checkpoint
from broker.audit.entry import AuditEntry, EntryKind
from broker.audit.merkle import perfect_cover
from broker.audit.rows import UnreadableRow
from broker.audit.stores.archive_db import ArchiveWriter
from broker.audit.stores.archive_files import ArchiveDirectory, write_segment_files
from broker.audit.stores.source import LogSource, consistency_proof, tree_root
from broker.core.errors import AuditError, ExchangeError, Reason
from broker.core.trust import TrustStore


@dataclass(frozen=True, kw_only=True)
class Compacted:
    archived: ArchivedRange
    emptied: int  # envelopes dropped by this run (0: the range was compacted before)


async def _entries_between(source: LogSource, first: int, end: int) -> list[AuditEntry]:
    """The stored rows [first, end), each readable, in place and hashing to its leaf hash."""
    found: list[AuditEntry] = []
    if first >= end:
        return found
    async for row in source.rows(first):
        expected = first + len(found)
        if isinstance(row, UnreadableRow) or row.index != expected:
            raise AuditError(
                Reason.AUDIT_TAMPERED,
                f"entry {expected} of {source.name} is missing or unreadable: run `broker audit verify`",
            )
        found.append(row)
        if len(found) == end - first:
            return found
    raise AuditError(Reason.AUDIT_OUT_OF_RANGE, f"{source.name} has no entries up to {end}")


async def _anchor(source: LogSource, size: int, *, trust: TrustStore) -> SignedCheckpoint:
    """The first checkpoint in the log signing a tree of at least `size` entries whose signature checks."""
    signed: list[SignedCheckpoint] = []
    async for row in source.select(kind=EntryKind.CHECKPOINT):
        if isinstance(row, AuditEntry):
            try:
                signed.append(SignedCheckpoint.from_bytes(row.envelope))
            except ExchangeError:
                continue  # `verify` reports it
    for checkpoint in sorted(signed, key=lambda cp: cp.body.tree_size):
        if checkpoint.body.tree_size >= size:
            verify_checkpoint(checkpoint, trust=trust)
            return checkpoint
    latest = max((cp.body.tree_size for cp in signed), default=0)
    raise AuditError(
        Reason.AUDIT_NOT_COVERED,
        f"no signed checkpoint in {source.name} covers the first {size} entries (the latest signs "
        f"{latest}): archive up to {latest} at most, or wait for the gateway's next checkpoint",
    )


async def archive_range(
    source: LogSource, writer: ArchiveWriter, *, up_to: int, directory: Path, trust: TrustStore
) -> SegmentManifest:
    ranges = await source.segments()
    first = ranges[-1].end_index if ranges else 0
    if up_to <= first:
        raise AuditError(
            Reason.AUDIT_ARCHIVE_REFUSED,
            f"the first {first} entries are archived already (up to {ranges[-1].describe()}); "
            f"--up-to must be above {first}",
        )
    size = await source.size()
    if up_to > size:
        raise AuditError(Reason.AUDIT_OUT_OF_RANGE, f"{source.name} has {size} entries, fewer than {up_to}")
    checkpoint = await _anchor(source, up_to, trust=trust)
    entries = await _entries_between(source, first, up_to)
    for entry in entries:
        if not entry.leaf_hash_matches():
            raise AuditError(
                Reason.AUDIT_TAMPERED,
                f"entry {entry.index} does not hash to its stored leaf hash: run `broker audit verify`",
            )
    cover = perfect_cover(0, first)
    nodes = await source.nodes(cover)
    if set(cover) - nodes.keys():
        raise AuditError(Reason.AUDIT_TAMPERED, f"{source.name}: stored subtree hashes are missing")
    data = build_segment(entries)
    manifest = SegmentManifest(
        first_index=first,
        end_index=up_to,
        segment=segment_name(first, up_to),
        segment_sha256=hashlib.sha256(data).digest(),
        prefix=tuple(nodes[node] for node in cover),
        root=await tree_root(source, up_to),
        checkpoint=checkpoint,
        consistency=tuple(await consistency_proof(source, up_to, checkpoint.body.tree_size)),
    )
    check_segment(manifest, data, trust=trust)  # nothing that does not check is ever written
    archived = ArchivedRange(
        first_index=first,
        end_index=up_to,
        segment=manifest.segment,
        segment_sha256=manifest.segment_sha256,
        manifest=manifest.to_bytes(),
    )
    await asyncio.to_thread(write_segment_files, directory, archived, data)
    # Read back from the disk, and record the range only if that copy checks against the store.
    _check_against_rows(ArchiveDirectory(directory, trust=trust), archived, entries)
    await writer.record(archived)
    return manifest


def _check_against_rows(
    archive: ArchiveDirectory, archived: ArchivedRange, rows: Sequence[AuditEntry]
) -> None:
    """Every stored row of the range against the segment: leaf hash and columns, and for a row that
    still holds its envelope, the envelope too."""
    records = archive.load(archived)
    for row in rows:
        whole = archive.whole(row, archived)
        if row.envelope and row.envelope != records[row.index].draft.envelope:
            raise SegmentInvalid(
                f"entry {row.index}: the stored envelope is not the one archived in {archived.segment}",
                index=row.index,
            )
        if not whole.leaf_hash_matches():
            raise SegmentInvalid(f"entry {row.index}: does not hash to its leaf hash", index=row.index)


async def compact_archived(
    source: LogSource,
    writer: ArchiveWriter,
    *,
    directory: Path,
    trust: TrustStore,
    now: datetime,
    min_age: timedelta,
) -> list[Compacted]:
    """Drop the envelopes of every recorded range that still holds some, each only after its segment
    was read from `directory` and checked entry by entry against the store."""
    ranges = await source.segments()
    if not ranges:
        raise AuditError(
            Reason.AUDIT_ARCHIVE_REFUSED,
            f"nothing in {source.name} is archived: run `broker audit archive` first",
        )
    archive = ArchiveDirectory(directory, trust=trust)
    done: list[Compacted] = []
    for archived in ranges:
        rows = await _entries_between(source, archived.first_index, archived.end_index)
        if not any(row.envelope and row.kind not in KEPT_KINDS for row in rows):
            done.append(Compacted(archived=archived, emptied=0))
            continue
        _check_against_rows(archive, archived, rows)
        check_compaction_age(max(row.time for row in rows), now=now, min_age=min_age, archived=archived)
        done.append(Compacted(archived=archived, emptied=await writer.compact(archived)))
    return done
