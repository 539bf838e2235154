"""The PostgreSQL writer lock (`writer_lock`): a session advisory lock on a connection of its own."""

from __future__ import annotations

import os
from typing import Any

import asyncpg  # asyncpg ships no type information

from broker.audit.stores.postgres import lock_key
from broker.audit.stores.writer_lock import holder_name
from broker.core.errors import AuditError, Reason
from broker.core.tls_policy import check_postgres_dsn


def _split_key(key: int) -> tuple[int, int]:
    """pg_locks shows a bigint advisory key as two 32-bit oids: (classid, objid)."""
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    return unsigned >> 32, unsigned & 0xFFFF_FFFF


class PostgresWriterLock:
    """A session advisory lock on a connection kept for it alone, keyed by the log's schema."""

    def __init__(self, *, dsn: str, schema: str, key: int) -> None:
        self._dsn = dsn
        self._schema = schema
        self._key = key
        self._connection: Any = None
        self._pid: int | None = None

    @classmethod
    def for_schema(
        cls, dsn: str, *, schema: str, plaintext_hosts: tuple[str, ...] = ()
    ) -> PostgresWriterLock:
        """The writer lock of the log in `schema` (the same key in every process)."""
        check_postgres_dsn(dsn, plaintext_hosts=plaintext_hosts, environ=os.environ)
        return cls(dsn=dsn, schema=schema, key=lock_key("writer", schema))

    @property
    def where(self) -> str:
        return f"PostgreSQL advisory lock of schema {self._schema}"

    def fence(self) -> tuple[str, tuple[int, int, int]]:
        """A query (and its arguments) true only while this session holds the lock, for each write."""
        if self._pid is None:
            raise AuditError(Reason.AUDIT_WRITER_LOST, f"the {self.where} is not held")
        classid, objid = _split_key(self._key)
        return (
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1 AND pid = $3)",
            (classid, objid, self._pid),
        )

    async def try_acquire(self) -> bool:
        if self._pid is not None:
            return True
        try:
            if self._connection is None or self._connection.is_closed():
                self._connection = await asyncpg.connect(
                    self._dsn, server_settings={"application_name": f"gateway {holder_name()}"}
                )
            if not await self._connection.fetchval("SELECT pg_try_advisory_lock($1)", self._key):
                return False
            self._pid = int(await self._connection.fetchval("SELECT pg_backend_pid()"))
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise AuditError(Reason.AUDIT_UNAVAILABLE, f"taking the {self.where}: {exc}") from exc
        return True

    async def holder(self) -> str | None:
        classid, objid = _split_key(self._key)
        try:
            if self._connection is None or self._connection.is_closed():
                return None
            row = await self._connection.fetchrow(
                "SELECT a.application_name, a.backend_start FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                "AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid AND l.objsubid = 1",
                classid,
                objid,
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            return None
        if row is None:
            return None
        return f"{row['application_name']} since {row['backend_start']:%Y-%m-%dT%H:%M:%S%z}"

    async def check_held(self) -> None:
        query, arguments = self.fence()
        try:
            held = await self._connection.fetchval(query, *arguments)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            # The session is gone, and the server released the lock with it.
            raise AuditError(Reason.AUDIT_WRITER_LOST, f"the {self.where} was lost: {exc}") from exc
        if not held:
            raise AuditError(Reason.AUDIT_WRITER_LOST, f"the {self.where} is no longer held")

    async def release(self) -> None:
        connection, self._connection, self._pid = self._connection, None, None
        if connection is not None and not connection.is_closed():
            try:
                await connection.close(timeout=5)  # ending the session releases the lock
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
                connection.terminate()
