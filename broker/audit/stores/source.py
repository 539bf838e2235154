"""Read-only access to a copy of an audit store, for the auditor (I/O edge; the checks are pure).

The gateway's stores assume their rows are sound: an edited `kind` or `time` makes them raise in
the middle of a page. An auditor must instead see exactly which row is broken, so rows are read
here one by one and an unreadable row becomes an `UnreadableRow` that verification reports by
index. Nothing is ever written: SQLite is opened with `mode=ro`, PostgreSQL sessions are read-only.

Each source reads one consistent state of the log, as it stood at the source's first read: SQLite
in one read transaction, PostgreSQL in one REPEATABLE READ transaction. A gateway appending (or
compacting) meanwhile changes nothing the auditor sees, and pages read later cannot disagree with
the archived ranges read first.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator, Collection
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

import asyncpg  # asyncpg ships no type information

from broker.audit.archive import ArchivedRange
from broker.audit.entry import AuditEntry, EntryDraft, EntryKind
from broker.audit.merkle import (
    EMPTY_ROOT,
    NodeId,
    consistency_ranges,
    fold_cover,
    inclusion_ranges,
    perfect_cover,
)
from broker.audit.rows import UnreadableRow
from broker.audit.stores.sqlite import NODE_CHUNK, nodes_query
from broker.core.errors import AuditError, ConfigError, Reason
from broker.core.tls_policy import check_postgres_dsn

PAGE = 1000
_COLUMNS = "idx, kind, time, message_id, message_type, peer, envelope, verdict, reason, leaf_hash"
_PG_PREFIXES = ("postgres://", "postgresql://")
_SEGMENT_COLUMNS = "first_index, end_index, segment, segment_sha256, manifest"


class LogSource(Protocol):
    name: str

    async def size(self) -> int:
        """One past the highest stored index (gaps included)."""
        ...

    def rows(self, start: int = 0) -> AsyncIterator[AuditEntry | UnreadableRow]:
        """Every stored row from index `start` on, in index order, gaps left as they are."""
        ...

    def select(
        self, *, kind: EntryKind | None = None, message_id: UUID | None = None
    ) -> AsyncIterator[AuditEntry | UnreadableRow]:
        """Stored rows of one kind and/or about one message, in index order."""
        ...

    async def nodes(self, wanted: Collection[NodeId]) -> dict[NodeId, bytes]: ...

    async def segments(self) -> list[ArchivedRange]:
        """The archived ranges the store records, in index order (none in a store never archived)."""
        ...

    async def close(self) -> None: ...


def _archived_range(values: tuple[Any, ...]) -> ArchivedRange:
    first_index, end_index, segment, segment_sha256, manifest = values
    return ArchivedRange(
        first_index=first_index,
        end_index=end_index,
        segment=segment,
        segment_sha256=bytes(segment_sha256),
        manifest=bytes(manifest),
    )


def _row_to_entry(values: tuple[Any, ...]) -> AuditEntry | UnreadableRow:
    index, kind, time, message_id, message_type, peer, envelope, verdict, reason, leaf_hash = values
    try:
        if isinstance(time, str):
            time = datetime.fromisoformat(time)
        if isinstance(message_id, str):
            message_id = UUID(message_id)
        elif message_id is not None:
            message_id = UUID(bytes=message_id.bytes)  # asyncpg's own UUID type
        draft = EntryDraft(
            kind=EntryKind(kind),
            time=time,
            message_id=message_id,
            message_type=message_type,
            peer=peer,
            envelope=bytes(envelope),
            verdict=verdict,
            reason=reason,
        )
    except (ValueError, TypeError) as exc:
        return UnreadableRow(index=index, diagnostic=f"the stored row cannot be read: {exc}")
    return AuditEntry.placed(draft, index=index, leaf_hash=bytes(leaf_hash))


class SqliteSource:
    def __init__(self, *, path: Path) -> None:
        self.name = str(path)
        if not path.is_file():
            raise ConfigError(Reason.CONFIG_INVALID, f"no audit store at {path}")
        try:
            self._connection = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None
            )
            # Every later query reads the snapshot the first one takes (WAL: writers go on beside it).
            self._connection.execute("BEGIN")
        except sqlite3.Error as exc:
            raise AuditError(Reason.AUDIT_UNAVAILABLE, f"cannot open {path}: {exc}") from exc

    def _query(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._connection.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise AuditError(Reason.AUDIT_UNAVAILABLE, f"{self.name}: {exc}") from exc

    async def size(self) -> int:
        [(size,)] = self._query("SELECT coalesce(max(idx) + 1, 0) FROM audit_entries")
        return int(size)

    async def rows(self, start: int = 0) -> AsyncIterator[AuditEntry | UnreadableRow]:
        position = start
        while True:
            page = self._query(
                f"SELECT {_COLUMNS} FROM audit_entries WHERE idx >= ? ORDER BY idx LIMIT ?",  # noqa: S608
                (position, PAGE),
            )
            for values in page:
                yield _row_to_entry(values)
            if len(page) < PAGE:
                return
            position = page[-1][0] + 1

    async def select(
        self, *, kind: EntryKind | None = None, message_id: UUID | None = None
    ) -> AsyncIterator[AuditEntry | UnreadableRow]:
        # Only the conditions given: `(? IS NULL OR message_id = ?)` keeps SQLite off the message index,
        # which made every look-up by message a scan of the whole log.
        clauses, params = ["1"], []
        if kind is not None:
            clauses.append("kind = ?")
            params.append(str(kind))
        if message_id is not None:
            clauses.append("message_id = ?")
            params.append(str(message_id))
        rows = self._query(
            f"SELECT {_COLUMNS} FROM audit_entries WHERE {' AND '.join(clauses)} ORDER BY idx",  # noqa: S608 - fixed clauses
            params,
        )
        for values in rows:
            yield _row_to_entry(values)

    async def nodes(self, wanted: Collection[NodeId]) -> dict[NodeId, bytes]:
        listed = list(wanted)
        found: dict[NodeId, bytes] = {}
        for chunk_start in range(0, len(listed), NODE_CHUNK):
            chunk = listed[chunk_start : chunk_start + NODE_CHUNK]
            params = [value for node in chunk for value in (node.level, node.index)]
            for level, index, hashed in self._query(nodes_query(len(chunk)), params):
                found[NodeId(level, index)] = bytes(hashed)
        return found

    async def segments(self) -> list[ArchivedRange]:
        if not self._query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_archives'"):
            return []  # a store written before archiving existed
        rows = self._query(f"SELECT {_SEGMENT_COLUMNS} FROM audit_archives ORDER BY first_index")  # noqa: S608
        return [_archived_range(values) for values in rows]

    async def close(self) -> None:
        self._connection.close()


class PostgresSource:
    def __init__(self, *, connection: Any, schema: str, name: str) -> None:
        self._connection = connection
        self._schema = schema
        self.name = name

    @classmethod
    async def open(cls, dsn: str, *, schema: str, plaintext_hosts: Collection[str] = ()) -> PostgresSource:
        if not schema.isidentifier() or not schema.isascii():
            raise ConfigError(
                Reason.CONFIG_INVALID, f"audit schema name {schema!r} is not a plain identifier"
            )
        # An auditor's connection verifies the server too; a gateway's settings may name private hosts.
        check_postgres_dsn(dsn, plaintext_hosts=plaintext_hosts, environ=os.environ)
        try:
            connection = await asyncpg.connect(
                dsn, server_settings={"default_transaction_read_only": "on", "search_path": schema}
            )
        except (asyncpg.PostgresError, OSError) as exc:
            raise AuditError(
                Reason.AUDIT_UNAVAILABLE, f"cannot connect to the audit database: {exc}"
            ) from exc
        try:
            # One snapshot for every query of this source, however long the audit takes.
            await connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        except (asyncpg.PostgresError, OSError) as exc:
            await connection.close()
            raise AuditError(Reason.AUDIT_UNAVAILABLE, f"cannot read the audit database: {exc}") from exc
        return cls(connection=connection, schema=schema, name=f"PostgreSQL schema {schema}")

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        try:
            rows: list[Any] = await self._connection.fetch(sql, *args)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise AuditError(Reason.AUDIT_UNAVAILABLE, f"{self.name}: {exc}") from exc
        return rows

    async def size(self) -> int:
        [row] = await self._fetch(
            f"SELECT coalesce(max(idx) + 1, 0) AS size FROM {self._schema}.audit_entries"  # noqa: S608
        )
        return int(row["size"])

    async def rows(self, start: int = 0) -> AsyncIterator[AuditEntry | UnreadableRow]:
        position = start
        sql = f"SELECT {_COLUMNS} FROM {self._schema}.audit_entries WHERE idx >= $1 ORDER BY idx LIMIT $2"  # noqa: S608
        while True:
            page = await self._fetch(sql, position, PAGE)
            for record in page:
                yield _row_to_entry(tuple(record.values()))
            if len(page) < PAGE:
                return
            position = page[-1]["idx"] + 1

    async def select(
        self, *, kind: EntryKind | None = None, message_id: UUID | None = None
    ) -> AsyncIterator[AuditEntry | UnreadableRow]:
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM {self._schema}.audit_entries "  # noqa: S608
            "WHERE ($1::text IS NULL OR kind = $1) AND ($2::uuid IS NULL OR message_id = $2) ORDER BY idx",
            None if kind is None else str(kind),
            message_id,
        )
        for record in rows:
            yield _row_to_entry(tuple(record.values()))

    async def nodes(self, wanted: Collection[NodeId]) -> dict[NodeId, bytes]:
        listed = list(wanted)
        rows = await self._fetch(
            f"SELECT s.level, s.idx, s.hash FROM unnest($1::smallint[], $2::bigint[]) AS w(level, idx) "  # noqa: S608
            f"JOIN {self._schema}.audit_subtrees AS s ON s.level = w.level AND s.idx = w.idx",
            [node.level for node in listed],
            [node.index for node in listed],
        )
        return {NodeId(row["level"], row["idx"]): bytes(row["hash"]) for row in rows}

    async def segments(self) -> list[ArchivedRange]:
        [present] = await self._fetch(
            "SELECT to_regclass($1) IS NOT NULL AS present", f"{self._schema}.audit_archives"
        )
        if not present["present"]:
            return []  # a store written before archiving existed
        rows = await self._fetch(
            f"SELECT {_SEGMENT_COLUMNS} FROM {self._schema}.audit_archives ORDER BY first_index"  # noqa: S608
        )
        return [_archived_range(tuple(record.values())) for record in rows]

    async def close(self) -> None:
        await self._connection.close()


async def open_source(
    locator: str, *, schema: str = "audit", plaintext_hosts: Collection[str] = ()
) -> LogSource:
    """A SQLite file path, or a PostgreSQL URL (the schema from `#schema` or the `schema` argument)."""
    if locator.startswith(_PG_PREFIXES):
        dsn, _, fragment = locator.partition("#")
        return await PostgresSource.open(dsn, schema=fragment or schema, plaintext_hosts=plaintext_hosts)
    return SqliteSource(path=Path(locator))


async def _subtree_hashes(source: LogSource, ranges: list[tuple[int, int]]) -> list[bytes]:
    covers = [perfect_cover(start, end) for start, end in ranges]
    wanted = {node for cover in covers for node in cover}
    found = await source.nodes(wanted)
    missing = wanted - found.keys()
    if missing:
        raise AuditError(
            Reason.AUDIT_TAMPERED, f"{source.name}: {len(missing)} stored subtree hash(es) are missing"
        )
    return [fold_cover([found[node] for node in cover]) for cover in covers]


async def inclusion_proof(source: LogSource, index: int, size: int) -> list[bytes]:
    """PATH(index, D[size]) from the stored subtree hashes (RFC 9162 2.1.3.1)."""
    return await _subtree_hashes(source, inclusion_ranges(index, size))


async def consistency_proof(source: LogSource, old: int, new: int) -> list[bytes]:
    """PROOF(old, D[new]) from the stored subtree hashes (RFC 9162 2.1.4.1)."""
    return await _subtree_hashes(source, consistency_ranges(old, new))


async def tree_root(source: LogSource, size: int) -> bytes:
    if size == 0:
        return EMPTY_ROOT
    [root] = await _subtree_hashes(source, [(0, size)])
    return root
