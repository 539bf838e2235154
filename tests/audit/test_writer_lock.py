"""The audit log's writer lock: one holder at a time, the holder named, a lost lock noticed and fenced.

The file lock is tried by two holders in one process (flock locks belong to an open file, so two
opens contend like two processes do). The PostgreSQL lock runs against the real server, each test
under a schema name of its own, and loses its session the way a crashed host does: the server
terminates the backend (`pg_terminate_backend`).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from broker.audit.entry import EntryDraft, EntryKind
from broker.audit.stores.postgres import PostgresAuditStore
from broker.audit.stores.postgres_lock import PostgresWriterLock
from broker.audit.stores.writer_lock import FileWriterLock, holder_name
from broker.core.errors import AuditError, Reason
from tests.support.audit_logs import PG_DSN


def draft(note: bytes) -> EntryDraft:
    return EntryDraft(
        kind=EntryKind.SENT,
        time=datetime.now(UTC),
        message_id=None,
        message_type=None,
        peer=None,
        envelope=note,
    )


# -- the file lock beside SQLite ------------------------------------------------------------------


async def test_a_second_file_lock_waits_until_the_first_lets_go(tmp_path: Path) -> None:
    first, second = FileWriterLock(tmp_path / "gateway.lock"), FileWriterLock(tmp_path / "gateway.lock")

    assert await first.try_acquire()
    assert not await second.try_acquire()
    holder = await second.holder()
    assert holder is not None
    assert holder.startswith(holder_name())
    await first.check_held()

    await first.release()
    assert await second.try_acquire()
    with pytest.raises(AuditError) as caught:
        await first.check_held()
    assert caught.value.reason is Reason.AUDIT_WRITER_LOST
    await second.release()


async def test_a_lock_file_removed_under_the_holder_counts_as_lost(tmp_path: Path) -> None:
    lock = FileWriterLock(tmp_path / "gateway.lock")
    assert await lock.try_acquire()

    os.unlink(tmp_path / "gateway.lock")  # now another process could lock a new file of that name

    with pytest.raises(AuditError) as caught:
        await lock.check_held()
    assert caught.value.reason is Reason.AUDIT_WRITER_LOST
    assert "removed or replaced" in str(caught.value)
    await lock.release()


# -- the PostgreSQL advisory lock -----------------------------------------------------------------


@pytest_asyncio.fixture
async def schema() -> AsyncIterator[str]:
    name = f"ha_{secrets.token_hex(4)}"
    yield name
    connection = await asyncpg.connect(PG_DSN)
    try:
        await connection.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    finally:
        await connection.close()


def pg_lock(schema: str) -> PostgresWriterLock:
    return PostgresWriterLock.for_schema(PG_DSN, schema=schema)


@pytest.mark.postgres
async def test_one_postgres_holder_at_a_time_and_the_standby_sees_who(schema: str) -> None:
    first, second = pg_lock(schema), pg_lock(schema)
    try:
        assert await first.try_acquire()
        assert not await second.try_acquire()
        holder = await second.holder()
        assert holder is not None
        assert holder.startswith(f"gateway {holder_name()}")
        await first.check_held()

        await first.release()
        assert await second.try_acquire()
        await second.check_held()
    finally:
        await first.release()
        await second.release()


@pytest.mark.postgres
async def test_a_gateway_whose_session_died_cannot_append_and_its_standby_takes_over(schema: str) -> None:
    active, standby = pg_lock(schema), pg_lock(schema)
    store = await PostgresAuditStore.open(PG_DSN, schema=schema)
    try:
        assert await active.try_acquire()
        store.require_writer_lock(active.fence)
        [written] = await store.append([draft(b"under the lock")])
        assert written.index == 0

        # The lock's session ends as when its host dies: the server releases the lock with it.
        _, (_, _, pid) = active.fence()
        admin = await asyncpg.connect(PG_DSN)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()

        assert await standby.try_acquire()  # the standby's next try succeeds
        with pytest.raises(AuditError) as caught:
            await store.append([draft(b"after the lock was lost")])
        assert caught.value.reason is Reason.AUDIT_WRITER_LOST
        with pytest.raises(AuditError) as lost:
            await active.check_held()
        assert lost.value.reason is Reason.AUDIT_WRITER_LOST
        assert await store.size() == 1  # nothing appended after the loss
    finally:
        await store.close()
        await active.release()
        await standby.release()


@pytest.mark.postgres
async def test_a_write_fenced_by_a_lock_held_elsewhere_is_refused(schema: str) -> None:
    """Two stores on one log: only the one whose process holds the lock may write."""
    holder, other = pg_lock(schema), pg_lock(schema)
    mine = await PostgresAuditStore.open(PG_DSN, schema=schema)
    theirs = await PostgresAuditStore.open(PG_DSN, schema=schema)
    try:
        assert await holder.try_acquire()
        assert not await other.try_acquire()
        mine.require_writer_lock(holder.fence)
        theirs.require_writer_lock(other.fence)

        await mine.append([draft(b"the active one")])
        with pytest.raises(AuditError) as caught:
            await theirs.append([draft(b"the standby")])
        assert caught.value.reason is Reason.AUDIT_WRITER_LOST
        assert await mine.size() == 1
    finally:
        await mine.close()
        await theirs.close()
        await holder.release()
        await other.release()
