"""The operator's writes to an audit store for archiving (I/O edge): record a range, compact it.

Two statements and nothing else: insert a row into `audit_archives` (which its triggers make
append-only too), and empty the envelopes of entries inside a recorded range, which is the one
update the entries' triggers let through (broker/audit/stores/sqlite.py, postgres_store.py). Both
stores are first opened the way a gateway opens them, so an older store gets the current schema.

Compaction runs in short transactions of `COMPACT_CHUNK` entries, so a gateway appending to the
same log never waits long for the write lock.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import asyncpg  # asyncpg ships no type information

from broker.audit.archive import ArchivedRange
from broker.audit.entry import format_time
from broker.audit.stores.postgres import PostgresAuditStore
from broker.audit.stores.sqlite import SqliteAuditStore
from broker.core.errors import AuditError, ConfigError, Reason

T = TypeVar("T")
COMPACT_CHUNK = 1000
_PG_PREFIXES = ("postgres://", "postgresql://")

# Only entries inside a recorded range, only those holding an envelope, never checkpoints or witnesses.
_COMPACTABLE = "length(envelope) > 0 AND kind NOT IN ('checkpoint', 'witness')"


class ArchiveWriter(Protocol):
    name: str

    async def record(self, archived: ArchivedRange) -> None:
        """Record a segment; refused unless it starts where the last recorded one ends."""
        ...

    async def compact(self, archived: ArchivedRange) -> int:
        """Empty the envelopes of the range's entries; returns how many were emptied."""
        ...

    async def close(self) -> None: ...


def _not_next(archived: ArchivedRange, recorded_end: int, size: int) -> AuditError | None:
    if archived.first_index != recorded_end:
        return AuditError(
            Reason.AUDIT_ARCHIVE_REFUSED,
            f"{archived.describe()} does not start where the archived entries end ({recorded_end}): "
            f"another archive run recorded a segment meanwhile",
        )
    if archived.end_index > size:
        return AuditError(
            Reason.AUDIT_OUT_OF_RANGE, f"the log has {size} entries, fewer than {archived.end_index}"
        )
    return None


class SqliteArchiveWriter:
    def __init__(self, *, path: Path) -> None:
        self.name = str(path)
        self._connection = sqlite3.connect(path, isolation_level=None)
        self._connection.execute("PRAGMA busy_timeout=10000")
        self._connection.execute("PRAGMA synchronous=FULL")

    @classmethod
    async def open(cls, path: Path) -> SqliteArchiveWriter:
        if not await asyncio.to_thread(path.is_file):  # opening the store would create one
            raise ConfigError(Reason.CONFIG_INVALID, f"no audit store at {path}")
        await (await SqliteAuditStore.open(path)).close()  # brings an older store's schema up to date
        try:
            return cls(path=path)
        except sqlite3.Error as exc:
            raise AuditError(Reason.AUDIT_UNAVAILABLE, f"cannot open {path}: {exc}") from exc

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        connection = self._connection
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                result = work(connection)
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise AuditError(Reason.AUDIT_UNAVAILABLE, f"{self.name}: {exc}") from exc
        return result

    async def record(self, archived: ArchivedRange) -> None:
        def insert(connection: sqlite3.Connection) -> None:
            [(recorded_end,)] = connection.execute("SELECT coalesce(max(end_index), 0) FROM audit_archives")
            [(size,)] = connection.execute("SELECT coalesce(max(idx) + 1, 0) FROM audit_entries")
            refusal = _not_next(archived, recorded_end, size)
            if refusal is not None:
                raise refusal
            connection.execute(
                "INSERT INTO audit_archives (first_index, end_index, segment, segment_sha256, manifest, "
                "archived_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    archived.first_index,
                    archived.end_index,
                    archived.segment,
                    archived.segment_sha256,
                    archived.manifest,
                    format_time(datetime.now(UTC)),
                ),
            )

        self._transaction(insert)

    async def compact(self, archived: ArchivedRange) -> int:
        emptied = 0
        for first in range(archived.first_index, archived.end_index, COMPACT_CHUNK):
            end = min(first + COMPACT_CHUNK, archived.end_index)

            def update(connection: sqlite3.Connection, bounds: tuple[int, int] = (first, end)) -> int:
                sql = f"UPDATE audit_entries SET envelope = x'' WHERE idx >= ? AND idx < ? AND {_COMPACTABLE}"  # noqa: S608
                return connection.execute(sql, bounds).rowcount

            emptied += self._transaction(update)
            await asyncio.sleep(0)
        return emptied

    async def close(self) -> None:
        self._connection.close()


class PostgresArchiveWriter:
    def __init__(self, *, connection: Any, schema: str) -> None:
        self._connection = connection
        self._schema = schema
        self.name = f"PostgreSQL schema {schema}"

    @classmethod
    async def open(cls, dsn: str, *, schema: str) -> PostgresArchiveWriter:
        # The store checks the schema name and brings an older schema's triggers up to date.
        await (await PostgresAuditStore.open(dsn, schema=schema, max_connections=1)).close()
        try:
            connection = await asyncpg.connect(dsn)
        except (asyncpg.PostgresError, OSError) as exc:
            raise AuditError(
                Reason.AUDIT_UNAVAILABLE, f"cannot connect to the audit database: {exc}"
            ) from exc
        return cls(connection=connection, schema=schema)

    async def _transaction(self, work: Callable[[Any], Awaitable[T]]) -> T:
        try:
            async with self._connection.transaction():
                return await work(self._connection)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise AuditError(Reason.AUDIT_UNAVAILABLE, f"{self.name}: {exc}") from exc

    async def record(self, archived: ArchivedRange) -> None:
        archives, entries = f"{self._schema}.audit_archives", f"{self._schema}.audit_entries"

        async def insert(connection: Any) -> None:
            # One archive run at a time per log; appends to the entries go on meanwhile.
            await connection.execute(f"LOCK TABLE {archives} IN EXCLUSIVE MODE")
            recorded_end = await connection.fetchval(f"SELECT coalesce(max(end_index), 0) FROM {archives}")  # noqa: S608
            size = await connection.fetchval(f"SELECT coalesce(max(idx) + 1, 0) FROM {entries}")  # noqa: S608
            refusal = _not_next(archived, recorded_end, size)
            if refusal is not None:
                raise refusal
            await connection.execute(
                f"INSERT INTO {archives} (first_index, end_index, segment, segment_sha256, manifest, "  # noqa: S608
                "archived_at) VALUES ($1, $2, $3, $4, $5, now())",
                archived.first_index,
                archived.end_index,
                archived.segment,
                archived.segment_sha256,
                archived.manifest,
            )

        await self._transaction(insert)

    async def compact(self, archived: ArchivedRange) -> int:
        emptied = 0
        sql = (
            f"UPDATE {self._schema}.audit_entries SET envelope = ''::bytea "  # noqa: S608
            f"WHERE idx >= $1 AND idx < $2 AND {_COMPACTABLE}"
        )
        for first in range(archived.first_index, archived.end_index, COMPACT_CHUNK):
            end = min(first + COMPACT_CHUNK, archived.end_index)

            async def update(connection: Any, bounds: tuple[int, int] = (first, end)) -> int:
                status: str = await connection.execute(sql, *bounds)
                return int(status.rsplit(" ", 1)[-1])  # "UPDATE <count>"

            emptied += await self._transaction(update)
        return emptied

    async def close(self) -> None:
        await self._connection.close()


async def open_writer(locator: str, *, schema: str = "audit") -> ArchiveWriter:
    """A SQLite file path, or a PostgreSQL URL (the schema from `#schema` or the `schema` argument)."""
    if locator.startswith(_PG_PREFIXES):
        dsn, _, fragment = locator.partition("#")
        return await PostgresArchiveWriter.open(dsn, schema=fragment or schema)
    return await SqliteArchiveWriter.open(Path(locator))
