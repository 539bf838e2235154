"""The audit store: one test class run against SQLite and against a real PostgreSQL.

PostgreSQL comes from AUDIT_PG_DSN (default: the local trust-auth server). When it is missing the
postgres half of the suite fails; it never skips. Each test gets a fresh schema, dropped after.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg  # asyncpg ships no type information
import pytest

from broker.audit.entry import AuditEntry, EntryDraft, EntryKind, entry_leaf_hash
from broker.audit.merkle import EMPTY_ROOT, CompactRange, verify_consistency, verify_inclusion
from broker.audit.stores.base import READ_PAGE, GroupCommitter, StoreBase, WriteBatch, plan_batch
from broker.audit.stores.postgres import PostgresAuditStore
from broker.audit.stores.sqlite import SqliteAuditStore, nodes_query
from broker.core.errors import AuditError, ConfigError, Reason

PG_DSN = os.environ.get("AUDIT_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
T0 = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)


def draft(number: int, *, message_id: UUID | None = None, kind: EntryKind = EntryKind.RECEIVED) -> EntryDraft:
    return EntryDraft(
        kind=kind,
        time=T0 + timedelta(seconds=number, microseconds=number),
        message_id=message_id if message_id is not None else UUID(int=number + 1),
        message_type="worker.arrival",
        peer="ru.mvd",
        envelope=f'{{"n":{number}}}'.encode() + bytes([0, 255]),
        verdict="accepted",
    )


def naive_root(leaves: list[bytes]) -> bytes:
    """MTH from the RFC's recursive definition, independent of the code under test."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    split = 1
    while split * 2 < len(leaves):
        split *= 2
    return hashlib.sha256(b"\x01" + naive_root(leaves[:split]) + naive_root(leaves[split:])).digest()


async def collect(store: StoreBase, start: int = 0, end: int | None = None) -> list[AuditEntry]:
    return [entry async for entry in store.entries(start, end)]


@dataclass
class Backend:
    """How to open one log again and again, and how to reach its tables behind the store's back."""

    name: str
    open_store: Callable[[], Awaitable[StoreBase]]
    raw_sql: Callable[[str], Awaitable[None]]
    drop_guards: list[str]
    dispose_storage: Callable[[], Awaitable[None]]
    opened: list[StoreBase] = field(default_factory=list)

    async def open(self) -> StoreBase:
        store = await self.open_store()
        self.opened.append(store)
        return store

    async def dispose(self) -> None:
        try:
            for store in self.opened:
                await store.close()
        finally:
            await self.dispose_storage()


def sqlite_backend(path: Path) -> Backend:
    async def raw_sql(sql: str) -> None:
        connection = sqlite3.connect(path)
        try:
            connection.execute(sql)
            connection.commit()
        finally:
            connection.close()

    async def open_store() -> StoreBase:
        return await SqliteAuditStore.open(path)

    async def dispose_storage() -> None:
        pass  # tmp_path goes away on its own

    guards = [
        f"DROP TRIGGER {t}_no_{a}" for t in ("audit_entries", "audit_subtrees") for a in ("update", "delete")
    ]
    return Backend(
        name="sqlite",
        open_store=open_store,
        raw_sql=raw_sql,
        drop_guards=guards,
        dispose_storage=dispose_storage,
    )


def postgres_backend() -> Backend:
    schema = f"audit_test_{uuid4().hex[:16]}"

    async def raw_sql(sql: str) -> None:
        connection = await asyncpg.connect(PG_DSN, server_settings={"search_path": schema})
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    async def open_store() -> StoreBase:
        return await PostgresAuditStore.open(PG_DSN, schema=schema)

    async def dispose_storage() -> None:
        connection = await asyncpg.connect(PG_DSN)
        try:
            await connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await connection.close()

    guards = [f"DROP TRIGGER {t}_append_only ON {t}" for t in ("audit_entries", "audit_subtrees")]
    return Backend(
        name="postgres",
        open_store=open_store,
        raw_sql=raw_sql,
        drop_guards=guards,
        dispose_storage=dispose_storage,
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    chosen = sqlite_backend(tmp_path / "audit.db") if request.param == "sqlite" else postgres_backend()
    try:
        yield chosen
    finally:
        await chosen.dispose()


@pytest.fixture
async def postgres() -> AsyncIterator[Backend]:
    chosen = postgres_backend()
    try:
        yield chosen
    finally:
        await chosen.dispose()


@pytest.fixture
async def store(backend: Backend) -> StoreBase:
    return await backend.open()


class TestAuditStore:
    async def test_empty_log(self, store: StoreBase) -> None:
        assert await store.size() == 0
        assert await store.root() == EMPTY_ROOT
        assert await store.consistency_proof(0, 0) == []
        assert await collect(store) == []
        with pytest.raises(AuditError) as caught:
            await store.entry(0)
        assert caught.value.reason == Reason.AUDIT_OUT_OF_RANGE
        with pytest.raises(AuditError):
            await store.inclusion_proof(0)
        assert await store.append([]) == []

    async def test_append_places_entries_and_reads_them_back_exactly(self, store: StoreBase) -> None:
        moscow = timezone(timedelta(hours=3))
        drafts = [
            draft(0),
            EntryDraft(
                kind=EntryKind.REJECTED,
                time=datetime(2026, 11, 3, 12, 0, 0, 999999, tzinfo=moscow),
                message_id=None,
                message_type=None,
                peer=None,
                envelope=b"\x00not json at all\xff",
                verdict="rejected",
                reason="signature.invalid",
            ),
            draft(2, kind=EntryKind.CHECKPOINT),
        ]
        written = await store.append(drafts)
        assert [entry.index for entry in written] == [0, 1, 2]
        assert [entry.draft() for entry in written] == drafts
        assert [entry.leaf_hash for entry in written] == [entry_leaf_hash(d) for d in drafts]
        assert await store.size() == 3
        for entry in written:
            stored = await store.entry(entry.index)
            assert stored == entry
            assert stored.leaf_hash_matches()
            assert stored.time.utcoffset() == timedelta(0)
        assert await collect(store) == written

    async def test_roots_and_proofs_from_stored_subtrees_match_the_naive_tree(self, store: StoreBase) -> None:
        leaves: list[bytes] = []
        number = 0
        for batch_size in [1, 2, 3, 1, 5, 8, 1, 1, 13, 2]:
            written = await store.append([draft(number + i) for i in range(batch_size)])
            number += batch_size
            leaves.extend(entry.leaf_hash for entry in written)
        size = len(leaves)
        roots = [naive_root(leaves[:n]) for n in range(size + 1)]
        assert await store.root() == roots[size]
        for tree_size in range(1, size + 1):
            assert await store.root(tree_size) == roots[tree_size]
            for index in range(tree_size):
                path = await store.inclusion_proof(index, tree_size)
                assert verify_inclusion(leaves[index], index, tree_size, path, roots[tree_size])
            for old in range(tree_size + 1):
                path = await store.consistency_proof(old, tree_size)
                assert verify_consistency(old, tree_size, roots[old], roots[tree_size], path)
        # A proof for one leaf does not verify another.
        assert not verify_inclusion(leaves[3], 4, size, await store.inclusion_proof(4), roots[size])

    async def test_concurrent_appends_get_gap_free_indexes_in_few_transactions(
        self, store: StoreBase
    ) -> None:
        async def append_some(task: int) -> tuple[list[EntryDraft], list[AuditEntry]]:
            drafts = [draft(task * 10 + i, message_id=UUID(int=task + 1)) for i in range(1 + task % 3)]
            return drafts, await store.append(drafts)

        results = await asyncio.gather(*(append_some(task) for task in range(100)))
        total = sum(len(drafts) for drafts, _ in results)
        indexes = sorted(entry.index for _, written in results for entry in written)
        assert indexes == list(range(total))
        for drafts, written in results:
            # Each caller's entries are contiguous, in its order, and hold its drafts.
            assert [entry.index for entry in written] == list(
                range(written[0].index, written[0].index + len(drafts))
            )
            assert [entry.draft() for entry in written] == drafts
        assert store.batches_committed < 10
        stored = await collect(store)
        assert await store.root() == naive_root([entry.leaf_hash for entry in stored])

    async def test_find_by_message_id_and_kind(self, store: StoreBase) -> None:
        message = uuid4()
        await store.append([draft(0, message_id=message, kind=EntryKind.SENT), draft(1)])
        await store.append([draft(2, message_id=message, kind=EntryKind.RECEIPT_RECEIVED)])
        found = await store.find(message)
        assert [(entry.index, entry.kind) for entry in found] == [
            (0, EntryKind.SENT),
            (2, EntryKind.RECEIPT_RECEIVED),
        ]
        receipts = await store.find(message, kinds={EntryKind.RECEIPT_RECEIVED, EntryKind.DELIVERED})
        assert [entry.index for entry in receipts] == [2]
        assert await store.find(uuid4()) == []

    async def test_append_first_writes_a_kind_once_per_message_and_returns_the_trail(
        self, store: StoreBase
    ) -> None:
        message = uuid4()
        trail = {EntryKind.RECEIVED, EntryKind.DELIVERED}
        before, first = await store.append_first(draft(0, message_id=message), trail=trail)
        assert before == []
        assert first is not None
        assert first.index == 0
        await store.append([draft(1, message_id=message, kind=EntryKind.DELIVERED), draft(2)])
        again, second = await store.append_first(draft(3, message_id=message), trail=trail)
        assert second is None  # a duplicate: nothing written
        assert [(entry.index, entry.kind) for entry in again] == [
            (0, EntryKind.RECEIVED),
            (1, EntryKind.DELIVERED),
        ]
        assert await store.size() == 3
        # Copies racing into one transaction: one is written, the other sees a duplicate.
        other = uuid4()
        outcomes = await asyncio.gather(
            store.append_first(draft(4, message_id=other), trail=trail),
            store.append_first(draft(5, message_id=other), trail=trail),
            store.append([draft(6)]),
        )
        written = [entry for _, entry in outcomes[:2] if entry is not None]
        assert len(written) == 1
        assert [entry.kind for entry in await store.find(other)] == [EntryKind.RECEIVED]
        assert await store.root() == naive_root([entry.leaf_hash for entry in await collect(store)])

    async def test_entries_are_read_in_pages_and_in_order(self, store: StoreBase) -> None:
        count = READ_PAGE * 2 + 17
        await store.append([draft(i) for i in range(count)])
        everything = await collect(store)
        assert [entry.index for entry in everything] == list(range(count))
        assert [entry.index for entry in await collect(store, 10, 20)] == list(range(10, 20))
        assert [entry.index for entry in await collect(store, READ_PAGE - 1, READ_PAGE + 1)] == [
            READ_PAGE - 1,
            READ_PAGE,
        ]
        with pytest.raises(AuditError):
            await collect(store, 5, 2)
        with pytest.raises(AuditError):
            await collect(store, 0, count + 1)

    async def test_requests_beyond_the_log_are_refused(self, store: StoreBase) -> None:
        await store.append([draft(i) for i in range(5)])
        for request in (
            store.root(6),
            store.entry(5),
            store.entry(-1),
            store.inclusion_proof(5),
            store.inclusion_proof(0, 6),
            store.consistency_proof(3, 6),
            store.consistency_proof(4, 3),
        ):
            with pytest.raises(AuditError) as caught:
                await request
            assert caught.value.reason == Reason.AUDIT_OUT_OF_RANGE

    async def test_reopening_keeps_everything_and_appends_continue(self, backend: Backend) -> None:
        first = await backend.open()
        written = await first.append([draft(i) for i in range(11)])
        root_11 = await first.root()
        await first.close()

        second = await backend.open()
        assert await second.size() == 11
        assert await second.root() == root_11
        assert await collect(second) == written
        more = await second.append([draft(i) for i in range(11, 20)])
        assert [entry.index for entry in more] == list(range(11, 20))
        leaves = [entry.leaf_hash for entry in written + more]
        assert await second.root() == naive_root(leaves)
        assert verify_consistency(11, 20, root_11, naive_root(leaves), await second.consistency_proof(11, 20))

    async def test_two_writers_on_one_log_stay_gap_free(self, backend: Backend) -> None:
        # Two gateway processes sharing a log: each must notice the other's appends.
        one, two = await backend.open(), await backend.open()
        for round_number in range(6):
            writer = one if round_number % 2 else two
            await writer.append([draft(round_number * 3 + i) for i in range(1 + round_number)])
        entries = await collect(one)
        assert [entry.index for entry in entries] == list(range(21))
        assert await one.root() == await two.root() == naive_root([entry.leaf_hash for entry in entries])
        concurrent = await asyncio.gather(
            *(w.append([draft(100 + i)]) for i, w in enumerate([one, two] * 10))
        )
        assert sorted(batch[0].index for batch in concurrent) == list(range(21, 41))
        assert await two.root() == naive_root([entry.leaf_hash for entry in await collect(two)])

    @pytest.mark.parametrize(
        "statement",
        [
            "UPDATE audit_entries SET verdict = 'rejected' WHERE idx = 1",
            "DELETE FROM audit_entries WHERE idx = 2",
            "DELETE FROM audit_entries",
            "UPDATE audit_subtrees SET hash = hash WHERE level = 0",
            "DELETE FROM audit_subtrees WHERE level = 1",
        ],
    )
    async def test_the_database_refuses_to_change_or_delete_entries(
        self, backend: Backend, store: StoreBase, statement: str
    ) -> None:
        written = await store.append([draft(i) for i in range(4)])
        root = await store.root()
        with pytest.raises(Exception, match="append-only"):
            await backend.raw_sql(statement)
        assert await collect(store) == written
        assert await store.root() == root

    async def test_edits_behind_the_guards_are_detected(self, backend: Backend, store: StoreBase) -> None:
        # Someone with full database rights drops the triggers and edits rows.
        await store.append([draft(i) for i in range(4)])
        for statement in backend.drop_guards:
            await backend.raw_sql(statement)
        await backend.raw_sql("UPDATE audit_entries SET verdict = 'rejected' WHERE idx = 1")
        assert not (await store.entry(1)).leaf_hash_matches()
        assert (await store.entry(0)).leaf_hash_matches()
        await backend.raw_sql("DELETE FROM audit_subtrees WHERE level = 0 AND idx = 0")
        with pytest.raises(AuditError) as caught:
            await store.inclusion_proof(1)
        assert caught.value.reason == Reason.AUDIT_TAMPERED

    async def test_proofs_and_roots_read_subtree_hashes_not_entries(
        self, backend: Backend, store: StoreBase
    ) -> None:
        written = await store.append([draft(i) for i in range(23)])
        leaves = [entry.leaf_hash for entry in written]
        for statement in backend.drop_guards:
            await backend.raw_sql(statement)
        # Only the last entry row is left (it still fixes the size): proofs cannot come from rehashing.
        await backend.raw_sql("DELETE FROM audit_entries WHERE idx < 22")
        root = naive_root(leaves)
        assert await store.root() == root
        assert await store.root(13) == naive_root(leaves[:13])
        assert verify_inclusion(leaves[5], 5, 23, await store.inclusion_proof(5), root)
        assert verify_consistency(13, 23, naive_root(leaves[:13]), root, await store.consistency_proof(13))

    async def test_a_closed_store_refuses_appends(self, store: StoreBase) -> None:
        await store.close()
        with pytest.raises(AuditError) as caught:
            await store.append([draft(0)])
        assert caught.value.reason == Reason.AUDIT_UNAVAILABLE


@pytest.mark.postgres
async def test_postgres_refuses_truncate(postgres: Backend) -> None:
    store = await postgres.open()
    await store.append([draft(0)])
    for table in ("audit_entries", "audit_subtrees"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await postgres.raw_sql(f"TRUNCATE {table}")
    assert await store.size() == 1


@pytest.mark.postgres
async def test_postgres_schema_name_must_be_an_identifier() -> None:
    with pytest.raises(ConfigError):
        await PostgresAuditStore.open(PG_DSN, schema="audit; DROP TABLE x")


async def test_unreachable_postgres_is_an_audit_error() -> None:
    with pytest.raises(AuditError) as caught:
        await PostgresAuditStore.open("postgresql://postgres@127.0.0.1:1/test")
    assert caught.value.reason == Reason.AUDIT_UNAVAILABLE


async def test_sqlite_store_is_durable_wal(tmp_path: Path) -> None:
    store = await SqliteAuditStore.open(tmp_path / "audit.db")
    try:
        # Settings of the store's own writer connection: they decide when a commit is on disk.
        journal, synchronous = await store._writer.run(
            lambda c: (
                c.execute("PRAGMA journal_mode").fetchone()[0],
                c.execute("PRAGMA synchronous").fetchone()[0],
            )
        )
        assert (journal, synchronous) == ("wal", 2)  # 2 is FULL
    finally:
        await store.close()


def test_sqlite_node_lookups_probe_the_primary_key(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "plan.db")
    connection.executescript(
        "CREATE TABLE audit_subtrees (level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,"
        " PRIMARY KEY (level, idx)) STRICT, WITHOUT ROWID;"
    )
    plan = connection.execute("EXPLAIN QUERY PLAN " + nodes_query(3), [0, 1, 1, 2, 3, 0]).fetchall()
    details = [row[3] for row in plan]
    assert any(detail.startswith("SEARCH s USING PRIMARY KEY") for detail in details), details
    assert not any("SCAN s" in detail or "SCAN audit_subtrees" in detail for detail in details), details
    connection.close()


# Group commit on its own, with a fake writer.


class FakeWriter:
    def __init__(self, *, fail_first: int = 0) -> None:
        self.border = CompactRange()
        self.batches: list[int] = []
        self.fail_first = fail_first

    async def write(self, batch: WriteBatch) -> list[AuditEntry]:
        drafts = batch.decide({})
        await asyncio.sleep(0.005)  # the "fsync", during which new requests queue up
        if self.fail_first:
            self.fail_first -= 1
            raise RuntimeError("disk on fire")
        plan = plan_batch(self.border, drafts)
        self.border = plan.border_after
        self.batches.append(len(drafts))
        return plan.entries


async def test_group_commit_batches_waiting_callers_into_one_write() -> None:
    writer = FakeWriter()
    committer = GroupCommitter(write=writer.write)
    results = await asyncio.gather(*(committer.submit([draft(i), draft(i + 1000)]) for i in range(50)))
    assert sorted(entry.index for batch in results for entry in batch) == list(range(100))
    assert all(batch[1].index == batch[0].index + 1 for batch in results)
    assert len(writer.batches) < 5
    assert committer.batches_committed == len(writer.batches)
    await committer.close()


async def test_group_commit_caps_the_batch_size() -> None:
    writer = FakeWriter()
    committer = GroupCommitter(write=writer.write, max_batch_entries=10)
    await asyncio.gather(*(committer.submit([draft(i)]) for i in range(35)))
    assert max(writer.batches) <= 10
    assert sum(writer.batches) == 35
    await committer.close()


async def test_a_failed_write_fails_its_callers_and_the_writer_carries_on() -> None:
    writer = FakeWriter(fail_first=1)
    committer = GroupCommitter(write=writer.write)
    outcomes = await asyncio.gather(*(committer.submit([draft(i)]) for i in range(5)), return_exceptions=True)
    assert all(isinstance(outcome, AuditError) for outcome in outcomes)
    error = outcomes[0]
    assert isinstance(error, AuditError)
    assert error.reason == Reason.AUDIT_UNAVAILABLE
    assert isinstance(error.__cause__, RuntimeError)
    # Nothing was placed by the failed batch, so the next one starts at index 0.
    assert [entry.index for entry in await committer.submit([draft(9)])] == [0]
    await committer.close()


async def test_a_caller_that_gave_up_before_its_turn_gets_nothing_written() -> None:
    writer = FakeWriter()
    committer = GroupCommitter(write=writer.write)
    first = asyncio.create_task(committer.submit([draft(0)]))
    await asyncio.sleep(0)  # the writer takes the first request and starts its "fsync"
    abandoned = asyncio.create_task(committer.submit([draft(1)]))
    await asyncio.sleep(0)
    abandoned.cancel()
    assert [entry.index for entry in await first] == [0]
    assert [entry.index for entry in await committer.submit([draft(2)])] == [1]
    assert writer.batches == [1, 1]
    await committer.close()


async def test_close_writes_what_is_queued_then_refuses() -> None:
    writer = FakeWriter()
    committer = GroupCommitter(write=writer.write)
    queued = [asyncio.create_task(committer.submit([draft(i)])) for i in range(3)]
    await asyncio.sleep(0)
    await committer.close()
    assert sorted(task.result()[0].index for task in queued) == [0, 1, 2]
    with pytest.raises(AuditError):
        await committer.submit([draft(3)])
