"""PostgreSQL audit store (asyncpg), for deployments past one machine.

Same semantics as the SQLite store: one transaction per group-committed batch, and a
transaction-scoped advisory lock per log, so several processes can append to one log and indexes
stay gap-free. A gateway also holds the log's writer lock (`writer_lock`) and each of its writes
checks it (`require_writer_lock`). Triggers refuse UPDATE, DELETE and TRUNCATE; the one exception is compaction
(broker/audit/archive.py).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg  # asyncpg ships no type information

from broker.audit.entry import AuditEntry, EntryDraft, EntryKind
from broker.audit.merkle import CompactRange, NodeId, perfect_cover
from broker.audit.stores.base import StoreBase, WriteBatch, border_from_nodes, plan_batch
from broker.core.errors import AuditError, ConfigError, Reason
from broker.core.tls_policy import check_postgres_dsn

DEFAULT_SCHEMA = "audit"
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

_ENTRY_COLUMNS = "idx, kind, time, message_id, message_type, peer, envelope, verdict, reason, leaf_hash"


def _ddl(schema: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS {schema}.audit_entries (
    idx          bigint PRIMARY KEY CHECK (idx >= 0),
    kind         text NOT NULL,
    time         timestamptz NOT NULL,
    message_id   uuid,
    message_type text,
    peer         text,
    envelope     bytea NOT NULL,
    verdict      text,
    reason       text,
    leaf_hash    bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_entries_by_message ON {schema}.audit_entries (message_id)
    WHERE message_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS {schema}.audit_subtrees (
    level smallint NOT NULL,
    idx   bigint NOT NULL,
    hash  bytea NOT NULL,
    PRIMARY KEY (level, idx)
);
CREATE TABLE IF NOT EXISTS {schema}.audit_archives (
    first_index    bigint PRIMARY KEY CHECK (first_index >= 0),
    end_index      bigint NOT NULL CHECK (end_index > first_index),
    segment        text NOT NULL,
    segment_sha256 bytea NOT NULL,
    manifest       bytea NOT NULL,
    archived_at    timestamptz NOT NULL
);
CREATE OR REPLACE FUNCTION {schema}.audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
-- The one update the log allows (broker/audit/archive.py, "compaction"): emptying the envelope of an
-- entry inside a range recorded in audit_archives, every other column (the leaf hash included) as it
-- was. Checkpoints and witness records keep their bytes: they anchor the tree.
CREATE OR REPLACE FUNCTION {schema}.audit_entries_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF length(NEW.envelope) = 0 AND OLD.kind NOT IN ('checkpoint', 'witness')
            AND (NEW.idx, NEW.kind, NEW.time, NEW.message_id, NEW.message_type, NEW.peer,
                 NEW.verdict, NEW.reason, NEW.leaf_hash)
                IS NOT DISTINCT FROM (OLD.idx, OLD.kind, OLD.time, OLD.message_id, OLD.message_type,
                 OLD.peer, OLD.verdict, OLD.reason, OLD.leaf_hash)
            AND EXISTS (SELECT 1 FROM {schema}.audit_archives AS a
                        WHERE OLD.idx >= a.first_index AND OLD.idx < a.end_index)
        THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
""" + "".join(  # noqa: S608 - the schema name was checked to be a plain identifier
        f"""
CREATE OR REPLACE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {schema}.{table}
    FOR EACH ROW EXECUTE FUNCTION {schema}.{guard}();
CREATE OR REPLACE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {schema}.{table}
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.audit_refuse_change();
"""
        for table, guard in (
            ("audit_entries", "audit_entries_guard"),
            ("audit_subtrees", "audit_refuse_change"),
            ("audit_archives", "audit_refuse_change"),
        )
    )


def lock_key(purpose: str, schema: str) -> int:
    """A stable signed 64-bit advisory lock key, the same in every process."""
    digest = hashlib.sha256(f"broker.audit:{purpose}:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@asynccontextmanager
async def _driver_errors() -> AsyncIterator[None]:
    try:
        yield
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise AuditError(Reason.AUDIT_UNAVAILABLE, f"audit database error: {exc}") from exc


def _entry_from_record(record: asyncpg.Record) -> AuditEntry:
    message_id = record["message_id"]
    draft = EntryDraft(
        kind=EntryKind(record["kind"]),
        time=record["time"],
        # asyncpg has its own UUID type; hand out the standard one.
        message_id=UUID(bytes=message_id.bytes) if message_id is not None else None,
        message_type=record["message_type"],
        peer=record["peer"],
        envelope=bytes(record["envelope"]),
        verdict=record["verdict"],
        reason=record["reason"],
    )
    return AuditEntry.placed(draft, index=record["idx"], leaf_hash=bytes(record["leaf_hash"]))


@dataclass(frozen=True)
class _Statements:
    """Every statement, written once for a schema name already checked to be a plain identifier."""

    size: str
    insert_entry: str
    insert_node: str
    select_nodes: str
    select_range: str
    select_by_message: str
    select_by_messages: str
    lock_for_append: str

    @classmethod
    def for_schema(cls, schema: str) -> _Statements:
        # Interpolating is safe only because `open` checked the name against _SCHEMA_NAME.
        entries, subtrees = f"{schema}.audit_entries", f"{schema}.audit_subtrees"
        return cls(
            size=f"SELECT coalesce(max(idx) + 1, 0) FROM {entries}",  # noqa: S608
            insert_entry=(
                f"INSERT INTO {entries} ({_ENTRY_COLUMNS}) "  # noqa: S608
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ),
            insert_node=f"INSERT INTO {subtrees} (level, idx, hash) VALUES ($1, $2, $3)",  # noqa: S608
            select_nodes=(
                f"SELECT level, idx, hash FROM {subtrees} "  # noqa: S608
                "WHERE (level, idx) IN (SELECT * FROM unnest($1::smallint[], $2::bigint[]))"
            ),
            select_range=(
                f"SELECT {_ENTRY_COLUMNS} FROM {entries} "  # noqa: S608
                "WHERE idx >= $1 AND idx < $2 ORDER BY idx"
            ),
            select_by_message=(
                f"SELECT {_ENTRY_COLUMNS} FROM {entries} "  # noqa: S608
                "WHERE message_id = $1 AND ($2::text[] IS NULL OR kind = ANY($2::text[])) ORDER BY idx"
            ),
            select_by_messages=(
                f"SELECT {_ENTRY_COLUMNS} FROM {entries} "  # noqa: S608
                "WHERE message_id = ANY($1::uuid[]) ORDER BY idx"
            ),
            lock_for_append=f"LOCK TABLE {entries}, {subtrees} IN ROW EXCLUSIVE MODE NOWAIT",
        )


class PostgresAuditStore(StoreBase):
    def __init__(self, *, pool: asyncpg.Pool, schema: str) -> None:
        super().__init__()
        self._pool = pool
        self._sql = _Statements.for_schema(schema)
        self._append_lock = lock_key("append", schema)
        # The right border as this process last wrote it; re-read if another process appended.
        self._border = CompactRange()
        self._fence: Callable[[], tuple[str, tuple[Any, ...]]] | None = None

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        max_connections: int = 4,
        plaintext_hosts: Collection[str] = (),
    ) -> PostgresAuditStore:
        """Connect (verified TLS to any non-local host: `broker.core.tls_policy`) and create the schema."""
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ConfigError(
                Reason.CONFIG_INVALID, f"audit schema name {schema!r} is not a plain identifier"
            )
        check_postgres_dsn(dsn, plaintext_hosts=plaintext_hosts, environ=os.environ)
        async with _driver_errors():
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=max_connections)
        try:
            async with _driver_errors(), pool.acquire() as connection, connection.transaction():
                # Serialise set-up so two processes starting together do not race on CREATE.
                await connection.execute("SELECT pg_advisory_xact_lock($1)", lock_key("schema", schema))
                await connection.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
                await connection.execute(_ddl(schema))
        except BaseException:
            await pool.close()
            raise
        return cls(pool=pool, schema=schema)

    def require_writer_lock(self, fence: Callable[[], tuple[str, tuple[Any, ...]]]) -> None:
        """From now on each write first runs `fence()`'s query in its transaction and writes only if
        it is true: a gateway that lost its writer lock (`writer_lock`) cannot append."""
        self._fence = fence

    async def _write_batch(self, batch: WriteBatch) -> list[AuditEntry]:
        async with _driver_errors(), self._pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", self._append_lock)
            if self._fence is not None:
                query, arguments = self._fence()
                if not await connection.fetchval(query, *arguments):
                    raise AuditError(
                        Reason.AUDIT_WRITER_LOST,
                        "this gateway no longer holds the audit log's writer lock; nothing was written",
                    )
            existing: dict[UUID, list[AuditEntry]] = {}
            if batch.probed:
                for row in await connection.fetch(self._sql.select_by_messages, list(batch.probed)):
                    entry = _entry_from_record(row)
                    existing.setdefault(entry.message_id or UUID(int=0), []).append(entry)
            drafts = batch.decide(existing)
            if not drafts:
                return []
            size = await connection.fetchval(self._sql.size)
            border = self._border
            if border.size != size:
                border = border_from_nodes(size, await self._fetch_nodes(connection, perfect_cover(0, size)))
            plan = plan_batch(border, drafts)
            await connection.executemany(
                self._sql.insert_entry,
                [
                    (
                        entry.index,
                        str(entry.kind),
                        entry.time,
                        entry.message_id,
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
            await connection.executemany(
                self._sql.insert_node,
                [(node.level, node.index, hashed) for node, hashed in plan.nodes],
            )
        # Reached only after COMMIT: a failed batch leaves the cached border as it was.
        self._border = plan.border_after
        return plan.entries

    async def check_writable(self) -> None:
        async with _driver_errors(), self._pool.acquire() as connection, connection.transaction():
            # The lock an INSERT takes: refused without the right to insert, on a read-only server
            # or a standby. Nothing is written and the transaction ends at once.
            await connection.execute(self._sql.lock_for_append)

    async def _read_size(self) -> int:
        async with _driver_errors():
            size: int = await self._pool.fetchval(self._sql.size)
        return size

    async def _fetch_nodes(self, connection: Any, nodes: Collection[NodeId]) -> dict[NodeId, bytes]:
        wanted = list(nodes)
        rows = await connection.fetch(
            self._sql.select_nodes,
            [node.level for node in wanted],
            [node.index for node in wanted],
        )
        return {NodeId(row["level"], row["idx"]): bytes(row["hash"]) for row in rows}

    async def _read_nodes(self, nodes: Collection[NodeId]) -> dict[NodeId, bytes]:
        async with _driver_errors(), self._pool.acquire() as connection:
            return await self._fetch_nodes(connection, nodes)

    async def _read_entries(self, start: int, end: int) -> list[AuditEntry]:
        async with _driver_errors():
            rows = await self._pool.fetch(
                self._sql.select_range,
                start,
                end,
            )
        return [_entry_from_record(row) for row in rows]

    async def _read_by_message(
        self, message_id: UUID, kinds: Collection[EntryKind] | None
    ) -> list[AuditEntry]:
        async with _driver_errors():
            rows = await self._pool.fetch(
                self._sql.select_by_message,
                message_id,
                None if kinds is None else [str(kind) for kind in kinds],
            )
        return [_entry_from_record(row) for row in rows]

    async def _close_backend(self) -> None:
        async with _driver_errors():
            await self._pool.close()
