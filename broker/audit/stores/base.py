"""The audit store interface and what both backends share (no database driver here).

A backend only knows how to write one batch in one transaction and how to read rows and stored
subtree hashes. Everything about the tree lives here: which perfect subtrees a batch completes,
which ones a root or proof needs (O(log n) of them), and group commit, so that many concurrent
appends share one transaction and one fsync.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from uuid import UUID

import structlog

from broker.audit.entry import AuditEntry, EntryDraft, EntryKind, entry_leaf_hash
from broker.audit.merkle import (
    CompactRange,
    NodeId,
    consistency_ranges,
    fold_cover,
    inclusion_ranges,
    perfect_cover,
)
from broker.core.errors import AuditError, ExchangeError, Reason

log = structlog.get_logger(__name__)

# Enough to amortise an fsync over many entries, small enough to keep one transaction short.
MAX_BATCH_ENTRIES = 1024
READ_PAGE = 500


class AuditStore(Protocol):
    """An append-only log of entries under an RFC 9162 Merkle tree. Entries are never deleted."""

    async def append(self, drafts: Sequence[EntryDraft]) -> list[AuditEntry]:
        """Record the drafts, contiguous and in order; durable on disk before this returns."""
        ...

    async def append_first(
        self, draft: EntryDraft, *, trail: Collection[EntryKind]
    ) -> tuple[list[AuditEntry], AuditEntry | None]:
        """Append `draft` unless its message already has an entry of its kind, in one transaction.

        Returns the message's entries of the kinds in `trail` as they stood before, and the new entry
        (None when one of its kind was there: a duplicate). The check and the append cannot be split
        by another writer, and the gateway saves a separate lookup per message.
        """
        ...

    async def size(self) -> int: ...

    async def root(self, size: int | None = None) -> bytes:
        """MTH of the first `size` entries (default: all of them)."""
        ...

    async def entry(self, index: int) -> AuditEntry: ...

    def entries(self, start: int = 0, end: int | None = None) -> AsyncIterator[AuditEntry]:
        """Entries [start, end) in index order, read page by page."""
        ...

    async def find(
        self, message_id: UUID, kinds: Collection[EntryKind] | None = None
    ) -> list[AuditEntry]: ...

    async def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]: ...

    async def consistency_proof(self, old: int, new: int | None = None) -> list[bytes]: ...

    async def check_writable(self) -> None:
        """Raise AuditError unless an append could be written now (readiness); writes nothing."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, kw_only=True)
class PlannedBatch:
    """What one transaction writes, worked out before it is written."""

    entries: list[AuditEntry]
    nodes: list[tuple[NodeId, bytes]]
    border_after: CompactRange


def plan_batch(border: CompactRange, drafts: Sequence[EntryDraft]) -> PlannedBatch:
    """Place drafts after `border` (left untouched, so a failed commit changes nothing)."""
    after = border.copy()
    entries: list[AuditEntry] = []
    nodes: list[tuple[NodeId, bytes]] = []
    for draft in drafts:
        hashed = entry_leaf_hash(draft)
        entries.append(AuditEntry.placed(draft, index=after.size, leaf_hash=hashed))
        nodes.extend(after.append(hashed))
    return PlannedBatch(entries=entries, nodes=nodes, border_after=after)


def border_from_nodes(size: int, nodes: Mapping[NodeId, bytes]) -> CompactRange:
    """Resume appending after `size` entries from the stored hashes of `perfect_cover(0, size)`."""
    cover = perfect_cover(0, size)
    missing = [node for node in cover if node not in nodes]
    if missing:
        raise missing_nodes(missing)
    return CompactRange.from_border(size=size, hashes=[nodes[node] for node in cover])


def out_of_range(diagnostic: str) -> AuditError:
    return AuditError(Reason.AUDIT_OUT_OF_RANGE, diagnostic)


def missing_nodes(missing: Collection[NodeId]) -> AuditError:
    first = min(missing)
    return AuditError(
        Reason.AUDIT_TAMPERED,
        f"{len(missing)} stored subtree hash(es) are missing, e.g. level {first.level} index {first.index}",
    )


@dataclass
class _Request:
    drafts: list[EntryDraft]
    future: asyncio.Future[list[AuditEntry]] = field(repr=False)
    # For `append_first`: the kinds of the message's entries to hand back, and those found.
    trail: frozenset[EntryKind] | None = None
    found: list[AuditEntry] = field(default_factory=list)


class WriteBatch:
    """The requests one transaction serves. A backend reads the entries of `probed` message ids inside
    its transaction, `decide` says which drafts to write, and `share` hands each request its part."""

    def __init__(self, requests: Sequence[_Request]) -> None:
        self._requests = requests
        self._written: list[_Request] = []

    @property
    def probed(self) -> set[UUID]:
        return {
            r.drafts[0].message_id for r in self._requests if r.trail is not None and r.drafts[0].message_id
        }

    def decide(self, existing: Mapping[UUID, Sequence[AuditEntry]]) -> list[EntryDraft]:
        """The drafts to write, in order: a conditional one only if its message has no entry of its
        kind, neither in the log nor earlier in this batch."""
        planned: set[tuple[UUID | None, EntryKind]] = set()
        self._written = []
        for request in self._requests:
            if request.trail is not None:
                draft = request.drafts[0]
                stored = existing.get(draft.message_id, ()) if draft.message_id is not None else ()
                request.found = [entry for entry in stored if entry.kind in request.trail]
                if (draft.message_id, draft.kind) in planned or any(e.kind == draft.kind for e in stored):
                    continue
                planned.add((draft.message_id, draft.kind))
            self._written.append(request)
        return [draft for request in self._written for draft in request.drafts]

    def share(self, entries: Sequence[AuditEntry]) -> list[tuple[_Request, list[AuditEntry]]]:
        shares, offset = [], 0
        for request in self._written:
            shares.append((request, list(entries[offset : offset + len(request.drafts)])))
            offset += len(request.drafts)
        return [*shares, *((r, []) for r in self._requests if r not in self._written)]


class GroupCommitter:
    """One writer task; callers queue their drafts and await a future it resolves after commit.

    While one transaction is being made durable, new requests pile up in the queue; the next
    transaction takes all of them, so throughput grows with concurrency instead of fsyncs.
    """

    def __init__(
        self,
        *,
        write: Callable[[WriteBatch], Awaitable[list[AuditEntry]]],
        max_batch_entries: int = MAX_BATCH_ENTRIES,
    ) -> None:
        self._write = write
        self._max_batch_entries = max_batch_entries
        self._queue: asyncio.Queue[_Request | None] = asyncio.Queue()
        self._closed = False
        self.batches_committed = 0
        self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-group-commit")

    async def submit(self, drafts: Sequence[EntryDraft]) -> list[AuditEntry]:
        return await self._submit(_Request(list(drafts), asyncio.get_running_loop().create_future()))

    async def submit_first(
        self, draft: EntryDraft, *, trail: Collection[EntryKind]
    ) -> tuple[list[AuditEntry], AuditEntry | None]:
        request = _Request([draft], asyncio.get_running_loop().create_future(), trail=frozenset(trail))
        written = await self._submit(request)
        return request.found, (written[0] if written else None)

    async def _submit(self, request: _Request) -> list[AuditEntry]:
        if self._closed:
            raise AuditError(Reason.AUDIT_UNAVAILABLE, "the audit store is closed")
        self._queue.put_nowait(request)
        return await request.future

    async def close(self) -> None:
        """Write everything already queued, then stop."""
        if self._closed:
            return
        self._closed = True
        self._queue.put_nowait(None)
        await self._task

    async def _run(self) -> None:
        try:
            stopping = False
            while not stopping:
                first = await self._queue.get()
                if first is None:
                    break
                batch, stopping = self._drain(first)
                # A caller that gave up before its turn gets nothing written.
                live = [request for request in batch if not request.future.cancelled()]
                if live:
                    await self._commit(live)
        finally:
            self._fail_leftovers()

    def _drain(self, first: _Request) -> tuple[list[_Request], bool]:
        batch, count = [first], len(first.drafts)
        while count < self._max_batch_entries and not self._queue.empty():
            request = self._queue.get_nowait()
            if request is None:
                return batch, True
            batch.append(request)
            count += len(request.drafts)
        return batch, False

    async def _commit(self, batch: list[_Request]) -> None:
        work = WriteBatch(batch)
        try:
            written = await self._write(work)
        except ExchangeError as exc:
            self._fail(batch, exc)
            return
        except Exception as exc:  # the writer must outlive any one failed batch
            error = AuditError(Reason.AUDIT_UNAVAILABLE, f"audit write failed: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            self._fail(batch, error)
            return
        self.batches_committed += 1
        for request, share in work.share(written):
            if not request.future.done():
                request.future.set_result(share)

    @staticmethod
    def _fail(batch: list[_Request], error: ExchangeError) -> None:
        log.error(
            "audit.write_failed", reason=str(error.reason), diagnostic=error.diagnostic, requests=len(batch)
        )
        for request in batch:
            if not request.future.done():
                request.future.set_exception(error)

    def _fail_leftovers(self) -> None:
        while not self._queue.empty():
            request = self._queue.get_nowait()
            if request is not None and not request.future.done():
                request.future.set_exception(
                    AuditError(Reason.AUDIT_UNAVAILABLE, "the audit store is closed")
                )


class StoreBase(ABC):
    """The tree logic of `AuditStore` over a backend's few primitive reads and one batch write."""

    def __init__(self) -> None:
        self._committer = GroupCommitter(write=self._write_batch)
        self._closed = False

    # Backend primitives.

    @abstractmethod
    async def _write_batch(self, batch: WriteBatch) -> list[AuditEntry]:
        """In one transaction, serialised against every other writer of the same log: read the
        entries of `batch.probed` messages, `batch.decide` the drafts, read the size, place the
        drafts after it (`plan_batch`), insert entries and nodes, commit."""

    @abstractmethod
    async def _read_size(self) -> int: ...

    @abstractmethod
    async def _read_nodes(self, nodes: Collection[NodeId]) -> dict[NodeId, bytes]: ...

    @abstractmethod
    async def _read_entries(self, start: int, end: int) -> list[AuditEntry]: ...

    @abstractmethod
    async def _read_by_message(
        self, message_id: UUID, kinds: Collection[EntryKind] | None
    ) -> list[AuditEntry]: ...

    @abstractmethod
    async def _close_backend(self) -> None: ...

    @abstractmethod
    async def check_writable(self) -> None: ...

    # AuditStore.

    @property
    def batches_committed(self) -> int:
        """Transactions committed by this process: fewer than appends when group commit works."""
        return self._committer.batches_committed

    async def append(self, drafts: Sequence[EntryDraft]) -> list[AuditEntry]:
        if not drafts:
            return []
        return await self._committer.submit(drafts)

    async def append_first(
        self, draft: EntryDraft, *, trail: Collection[EntryKind]
    ) -> tuple[list[AuditEntry], AuditEntry | None]:
        if draft.message_id is None:
            raise ValueError("append_first needs an entry about a message")
        return await self._committer.submit_first(draft, trail=trail)

    async def size(self) -> int:
        return await self._read_size()

    async def root(self, size: int | None = None) -> bytes:
        size = await self._checked_size(size)
        cover = perfect_cover(0, size)
        nodes = await self._nodes(cover)
        return fold_cover([nodes[node] for node in cover])

    async def entry(self, index: int) -> AuditEntry:
        found = await self._read_entries(index, index + 1) if index >= 0 else []
        if not found:
            raise out_of_range(f"the audit log has no entry {index}")
        return found[0]

    async def entries(self, start: int = 0, end: int | None = None) -> AsyncIterator[AuditEntry]:
        end = await self._checked_size(end)
        if not 0 <= start <= end:
            raise out_of_range(f"no entries [{start}, {end}) in the audit log")
        for page_start in range(start, end, READ_PAGE):
            for entry in await self._read_entries(page_start, min(page_start + READ_PAGE, end)):
                yield entry

    async def find(self, message_id: UUID, kinds: Collection[EntryKind] | None = None) -> list[AuditEntry]:
        return await self._read_by_message(message_id, kinds)

    async def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        size = await self._checked_size(size)
        if not 0 <= index < size:
            raise out_of_range(f"entry {index} is not in the first {size} entries")
        return await self._subtree_hashes(inclusion_ranges(index, size))

    async def consistency_proof(self, old: int, new: int | None = None) -> list[bytes]:
        new = await self._checked_size(new)
        if not 0 <= old <= new:
            raise out_of_range(f"no consistency proof from size {old} to {new}")
        return await self._subtree_hashes(consistency_ranges(old, new))

    async def close(self) -> None:
        """Write what is queued, then release the database; closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._committer.close()
        finally:
            await self._close_backend()

    # Helpers.

    async def _checked_size(self, size: int | None) -> int:
        current = await self._read_size()
        if size is None:
            return current
        if not 0 <= size <= current:
            raise out_of_range(f"the audit log has {current} entries, not {size}")
        return size

    async def _nodes(self, wanted: Collection[NodeId]) -> dict[NodeId, bytes]:
        found = await self._read_nodes(wanted) if wanted else {}
        missing = set(wanted) - found.keys()
        if missing:
            raise missing_nodes(missing)
        return found

    async def _subtree_hashes(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        """MTH of each range, from stored perfect subtrees fetched in one read."""
        covers = [perfect_cover(start, end) for start, end in ranges]
        nodes = await self._nodes({node for cover in covers for node in cover})
        return [fold_cover([nodes[node] for node in cover]) for cover in covers]
