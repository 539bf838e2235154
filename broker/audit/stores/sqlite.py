"""SQLite audit store: the embedded default.

WAL with `synchronous=FULL`, so a commit is on disk when it returns. sqlite3 blocks, so each of
the two connections lives in its own thread: the writer (one transaction per group-committed
batch) and a reader, which WAL lets run beside the writer. The event loop never waits on fsync.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from broker.audit.entry import AuditEntry, EntryDraft, EntryKind, format_time
from broker.audit.merkle import CompactRange, NodeId, perfect_cover
from broker.audit.stores.base import StoreBase, WriteBatch, border_from_nodes, plan_batch
from broker.core.errors import AuditError, Reason
from broker.state.private_files import prepare_database

T = TypeVar("T")

# 2: audit_archives, and the entries' update trigger lets compaction through (nothing else).
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_entries (
    idx          INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL,
    time         TEXT NOT NULL,
    message_id   TEXT,
    message_type TEXT,
    peer         TEXT,
    envelope     BLOB NOT NULL,
    verdict      TEXT,
    reason       TEXT,
    leaf_hash    BLOB NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS audit_entries_by_message ON audit_entries (message_id)
    WHERE message_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS audit_subtrees (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit_archives (
    first_index    INTEGER PRIMARY KEY CHECK (first_index >= 0),
    end_index      INTEGER NOT NULL CHECK (end_index > first_index),
    segment        TEXT NOT NULL,
    segment_sha256 BLOB NOT NULL,
    manifest       BLOB NOT NULL,
    archived_at    TEXT NOT NULL
) STRICT;
"""

# The one update the log allows (broker/audit/archive.py, "compaction"): emptying the envelope of an
# entry inside a range recorded in audit_archives, every other column (the leaf hash included) as it
# was. Checkpoints and witness records keep their bytes: they anchor the tree.
_COMPACTION_ONLY = """
    NEW.envelope = x'' AND OLD.kind NOT IN ('checkpoint', 'witness')
    AND NEW.idx IS OLD.idx AND NEW.kind IS OLD.kind AND NEW.time IS OLD.time
    AND NEW.message_id IS OLD.message_id AND NEW.message_type IS OLD.message_type
    AND NEW.peer IS OLD.peer AND NEW.verdict IS OLD.verdict AND NEW.reason IS OLD.reason
    AND NEW.leaf_hash IS OLD.leaf_hash
    AND EXISTS (SELECT 1 FROM audit_archives WHERE OLD.idx >= first_index AND OLD.idx < end_index)
"""

# Append-only is enforced by the database too, not only by this code.
_APPEND_ONLY = "".join(
    f"""
CREATE TRIGGER IF NOT EXISTS {table}_no_{action} BEFORE {action.upper()} ON {table}
{"WHEN NOT (" + _COMPACTION_ONLY + ")" if (table, action) == ("audit_entries", "update") else ""}
BEGIN SELECT RAISE(ABORT, 'audit log is append-only: {action} on {table} refused'); END;
"""
    for table in ("audit_entries", "audit_subtrees", "audit_archives")
    for action in ("update", "delete")
)

_COLUMNS = "idx, kind, time, message_id, message_type, peer, envelope, verdict, reason, leaf_hash"
_INSERT_ENTRY = f"INSERT INTO audit_entries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
_SELECT_RANGE = f"SELECT {_COLUMNS} FROM audit_entries WHERE idx >= ? AND idx < ? ORDER BY idx"  # noqa: S608
_SELECT_BY_MESSAGE = f"SELECT {_COLUMNS} FROM audit_entries WHERE message_id = ? ORDER BY idx"  # noqa: S608


class _ConnectionThread:
    """One sqlite3 connection, only ever touched from its own thread."""

    def __init__(self, *, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._connection: sqlite3.Connection | None = None
        self._closed = False

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._connection is None:
                raise AuditError(Reason.AUDIT_UNAVAILABLE, "the audit database is not open")
            return work(self._connection)

        return await self._submit(call)

    async def connect(self, path: Path, *, setup: Callable[[sqlite3.Connection], None]) -> None:
        def call() -> None:
            # Autocommit mode: transactions are begun and ended explicitly below.
            connection = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
            try:
                setup(connection)
            except BaseException:
                connection.close()
                raise
            self._connection = connection

        await self._submit(call)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        def call() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        try:
            await self._submit(call)
        finally:
            self._executor.shutdown(wait=False)

    async def _submit(self, call: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, call)
        except sqlite3.Error as exc:
            raise AuditError(Reason.AUDIT_UNAVAILABLE, f"audit database error: {exc}") from exc


def _setup_writer(connection: sqlite3.Connection) -> None:
    mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode != "wal":
        raise AuditError(Reason.AUDIT_UNAVAILABLE, f"the audit database refused WAL mode ({mode})")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA busy_timeout=10000")
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    # A version 1 store's update trigger refuses compaction too; it is replaced in the same transaction.
    upgrade = "DROP TRIGGER IF EXISTS audit_entries_no_update;" if version < SCHEMA_VERSION else ""
    connection.executescript(
        f"BEGIN IMMEDIATE;{upgrade}{_SCHEMA}{_APPEND_ONLY}PRAGMA user_version={SCHEMA_VERSION};COMMIT;"
    )


def _setup_reader(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA busy_timeout=10000")
    connection.execute("PRAGMA query_only=ON")


def _select_size(connection: sqlite3.Connection) -> int:
    size: int = connection.execute("SELECT coalesce(max(idx) + 1, 0) FROM audit_entries").fetchone()[0]
    return size


NODE_CHUNK = 200  # keeps each statement well under SQLite's bound-parameter limit


def nodes_query(count: int) -> str:
    """Look up `count` (level, idx) pairs; CROSS JOIN makes SQLite probe the primary key per pair
    (an `IN (VALUES ...)` on the row value scans the whole table)."""
    pairs = ", ".join("(?, ?)" for _ in range(count))
    return (
        f"SELECT s.level, s.idx, s.hash FROM (VALUES {pairs}) AS wanted "  # noqa: S608
        "CROSS JOIN audit_subtrees AS s ON s.level = wanted.column1 AND s.idx = wanted.column2"
    )


def _select_nodes(connection: sqlite3.Connection, nodes: Iterable[NodeId]) -> dict[NodeId, bytes]:
    wanted = list(nodes)
    found: dict[NodeId, bytes] = {}
    for chunk_start in range(0, len(wanted), NODE_CHUNK):
        chunk = wanted[chunk_start : chunk_start + NODE_CHUNK]
        params = [value for node in chunk for value in (node.level, node.index)]
        rows = connection.execute(nodes_query(len(chunk)), params)
        found.update({NodeId(level, idx): hashed for level, idx, hashed in rows})
    return found


def _entry_from_row(row: tuple[Any, ...]) -> AuditEntry:
    idx, kind, time, message_id, message_type, peer, envelope, verdict, reason, leaf_hash = row
    draft = EntryDraft(
        kind=EntryKind(kind),
        time=datetime.fromisoformat(time),
        message_id=UUID(message_id) if message_id is not None else None,
        message_type=message_type,
        peer=peer,
        envelope=envelope,
        verdict=verdict,
        reason=reason,
    )
    return AuditEntry.placed(draft, index=idx, leaf_hash=leaf_hash)


def _select_by_message(connection: sqlite3.Connection, message_id: UUID) -> list[AuditEntry]:
    return [_entry_from_row(row) for row in connection.execute(_SELECT_BY_MESSAGE, (str(message_id),))]


def select_entries(connection: sqlite3.Connection, start: int, end: int) -> list[AuditEntry]:
    """Entries [start, end) as stored, from any open connection (an auditor's worker process too)."""
    return [_entry_from_row(row) for row in connection.execute(_SELECT_RANGE, (start, end))]


class SqliteAuditStore(StoreBase):
    def __init__(self, *, writer: _ConnectionThread, reader: _ConnectionThread, border: CompactRange) -> None:
        super().__init__()
        self._writer = writer
        self._reader = reader
        # The right border as this process last wrote it; re-read if another process appended.
        self._border = border

    @classmethod
    async def open(cls, path: str | Path) -> SqliteAuditStore:
        path = Path(path)
        try:
            await asyncio.to_thread(prepare_database, path)  # 0600 in 0700 before SQLite creates it
        except OSError as exc:
            raise AuditError(
                Reason.AUDIT_UNAVAILABLE, f"cannot open the audit database {path}: {exc}"
            ) from exc
        writer = _ConnectionThread(name="audit-sqlite-writer")
        reader = _ConnectionThread(name="audit-sqlite-reader")
        try:
            await writer.connect(path, setup=_setup_writer)
            await reader.connect(path, setup=_setup_reader)
            border = await writer.run(_load_border)
        except BaseException:
            await writer.close()
            await reader.close()
            raise
        return cls(writer=writer, reader=reader, border=border)

    async def _write_batch(self, batch: WriteBatch) -> list[AuditEntry]:
        cached = self._border

        def write(connection: sqlite3.Connection) -> tuple[list[AuditEntry], CompactRange]:
            # IMMEDIATE takes the write lock first, so the size read below cannot go stale.
            connection.execute("BEGIN IMMEDIATE")
            try:
                drafts = batch.decide(
                    {message_id: _select_by_message(connection, message_id) for message_id in batch.probed}
                )
                if not drafts:
                    connection.execute("COMMIT")
                    return [], cached
                size = _select_size(connection)
                border = cached if cached.size == size else _load_border(connection, size)
                plan = plan_batch(border, drafts)
                connection.executemany(
                    _INSERT_ENTRY,
                    [
                        (
                            entry.index,
                            str(entry.kind),
                            format_time(entry.time),
                            str(entry.message_id) if entry.message_id is not None else None,
                            entry.message_type,
                            entry.peer,
                            entry.envelope,
                            entry.verdict,
                            entry.reason,
                            entry.leaf_hash,
                        )
                        for entry in plan.entries
                    ],
                )
                connection.executemany(
                    "INSERT INTO audit_subtrees (level, idx, hash) VALUES (?, ?, ?)",
                    [(node.level, node.index, hashed) for node, hashed in plan.nodes],
                )
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            return plan.entries, plan.border_after

        entries, self._border = await self._writer.run(write)
        return entries

    async def _read_size(self) -> int:
        return await self._reader.run(_select_size)

    async def _read_nodes(self, nodes: Collection[NodeId]) -> dict[NodeId, bytes]:
        return await self._reader.run(lambda connection: _select_nodes(connection, nodes))

    async def _read_entries(self, start: int, end: int) -> list[AuditEntry]:
        return await self._reader.run(lambda connection: select_entries(connection, start, end))

    async def _read_by_message(
        self, message_id: UUID, kinds: Collection[EntryKind] | None
    ) -> list[AuditEntry]:
        def read(connection: sqlite3.Connection) -> list[AuditEntry]:
            entries = _select_by_message(connection, message_id)
            return [entry for entry in entries if kinds is None or entry.kind in kinds]

        return await self._reader.run(read)

    async def check_writable(self) -> None:
        def take_the_write_lock(connection: sqlite3.Connection) -> None:
            # What every append does first: fails on a read-only file system or a lock held elsewhere.
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("ROLLBACK")

        await self._writer.run(take_the_write_lock)

    async def _close_backend(self) -> None:
        try:
            await self._writer.close()
        finally:
            await self._reader.close()


def _load_border(connection: sqlite3.Connection, size: int | None = None) -> CompactRange:
    size = _select_size(connection) if size is None else size
    return border_from_nodes(size, _select_nodes(connection, perfect_cover(0, size)))
