"""Archive segment files on disk (I/O edge): written durably, read back and checked before use, and
the rows of a log made whole again from them. The checks themselves are in broker/audit/archive.py.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from broker.audit.archive import (
    ArchivedRange,
    SegmentInvalid,
    SegmentRecord,
    check_segment,
    is_compacted,
    manifest_for,
    range_of,
    restore,
)
from broker.audit.entry import AuditEntry
from broker.audit.rows import ArchivedRow, UnreadableRow
from broker.audit.stores.source import LogSource
from broker.core.errors import AuditError, ExchangeError, Reason
from broker.core.trust import TrustStore


def write_durably(path: Path, data: bytes) -> None:
    """Write a file whole or not at all, on disk when this returns; an identical file is kept as is
    (an earlier run stopped before recording it), a different one is refused, never overwritten."""
    try:
        if path.exists():
            if path.read_bytes() == data:
                return
            raise AuditError(
                Reason.AUDIT_ARCHIVE_REFUSED,
                f"{path} already exists with other content; an archive file is never overwritten",
            )
        partial = path.with_name(f".{path.name}.partial")
        with partial.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself
        finally:
            os.close(directory)
    except OSError as exc:
        raise AuditError(Reason.AUDIT_UNAVAILABLE, f"cannot write {path}: {exc}") from exc


def write_segment_files(directory: Path, archived: ArchivedRange, data: bytes) -> None:
    """The segment, then its manifest: a manifest on disk always has its segment beside it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AuditError(Reason.AUDIT_UNAVAILABLE, f"cannot create {directory}: {exc}") from exc
    write_durably(directory / archived.segment, data)
    write_durably(directory / archived.manifest_file, archived.manifest)


class ArchiveDirectory:
    """The segment files of one log in one directory; each segment is read and checked against its
    manifest and the store's record of it before any of it is used. One segment is held at a time."""

    def __init__(self, directory: Path, *, trust: TrustStore | None) -> None:
        self.directory = directory
        self._trust = trust
        self._loaded: tuple[ArchivedRange, dict[int, SegmentRecord]] | None = None

    def _read(self, archived: ArchivedRange, name: str) -> bytes:
        path = self.directory / name
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise AuditError(
                Reason.AUDIT_ARCHIVE_MISSING,
                f"{archived.describe()}: {path} is missing (deleted, moved, or never copied there)",
            ) from None
        except OSError as exc:
            raise AuditError(
                Reason.AUDIT_ARCHIVE_MISSING, f"{archived.describe()}: cannot read {path}: {exc}"
            ) from exc

    def load(self, archived: ArchivedRange) -> dict[int, SegmentRecord]:
        if self._loaded is not None and self._loaded[0] == archived:
            return self._loaded[1]
        self._loaded = None
        manifest = manifest_for(archived, self._read(archived, archived.manifest_file))
        records = check_segment(manifest, self._read(archived, archived.segment), trust=self._trust)
        by_index = {record.index: record for record in records}
        self._loaded = (archived, by_index)
        return by_index

    def whole(self, row: AuditEntry, archived: ArchivedRange) -> AuditEntry:
        """The row made whole from its segment, both checked to agree."""
        return restore(row, self.load(archived)[row.index], segment=archived.segment)


@dataclass(frozen=True)
class _Failed:
    """An archived row that could not be made whole: the stream stops here."""

    index: int
    error: ExchangeError


async def _whole_rows(
    source: LogSource, *, archive: ArchiveDirectory | None, ranges: Sequence[ArchivedRange] | None
) -> AsyncIterator[AuditEntry | UnreadableRow | ArchivedRow | _Failed]:
    ranges = await source.segments() if ranges is None else ranges
    async for row in source.rows():
        archived = None if isinstance(row, UnreadableRow) else range_of(row.index, ranges)
        if isinstance(row, UnreadableRow) or archived is None:
            yield row
        elif archive is None:
            yield ArchivedRow(stored=row, segment=archived.segment) if is_compacted(row) else row
        else:
            try:
                yield archive.whole(row, archived)
            except SegmentInvalid as error:
                yield _Failed(index=row.index if error.index is None else error.index, error=error)
                return
            except ExchangeError as error:
                yield _Failed(index=row.index, error=error)
                return


async def restored_rows(
    source: LogSource, *, archive: ArchiveDirectory | None, ranges: Sequence[ArchivedRange] | None = None
) -> AsyncIterator[AuditEntry | UnreadableRow | ArchivedRow]:
    """Every stored row in index order, for `verify`: archived ones made whole from `archive`. Without
    an archive a compacted row comes as an `ArchivedRow`; a segment that cannot be had or does not check
    ends the stream with an `UnreadableRow` carrying the reason, at the first index it concerns."""
    async for row in _whole_rows(source, archive=archive, ranges=ranges):
        if isinstance(row, _Failed):
            yield UnreadableRow(index=row.index, diagnostic=row.error.diagnostic, reason=row.error.reason)
        else:
            yield row


def refuse_archived(row: ArchivedRow) -> AuditError:
    return AuditError(
        Reason.AUDIT_ARCHIVE_MISSING,
        f"entry {row.index} was compacted: its record is in {row.segment}; pass --archive DIR, the "
        f"directory holding this log's segment files",
    )


async def readable_entries(
    source: LogSource,
    *,
    archive: ArchiveDirectory | None,
    wanted: Callable[[AuditEntry], bool] = lambda _: True,
) -> AsyncIterator[AuditEntry]:
    """The whole entries `wanted` picks (by the columns a compacted row keeps), for commands that read
    envelopes (bundle, replay, reconcile): a wanted entry that was compacted, with no archive at
    hand, or a segment that does not check, stops them with its error. Rows that cannot be read at
    all are `verify`'s business and are left out, as before archiving existed."""
    async for row in _whole_rows(source, archive=archive, ranges=None):
        if isinstance(row, ArchivedRow):
            if wanted(row.stored):
                raise refuse_archived(row)
        elif isinstance(row, _Failed):
            raise row.error
        elif isinstance(row, AuditEntry) and wanted(row):
            yield row


async def whole_entry(
    source: LogSource, entry: AuditEntry, *, archive: ArchiveDirectory | None
) -> AuditEntry:
    """One entry (found by `select`) made whole if it was compacted."""
    archived = range_of(entry.index, await source.segments())
    if archived is None:
        return entry
    if archive is None:
        if is_compacted(entry):
            raise refuse_archived(ArchivedRow(stored=entry, segment=archived.segment))
        return entry
    return archive.whole(entry, archived)
