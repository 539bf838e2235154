"""Copies of a live audit log an auditor can trust: `broker audit snapshot`, and `verify` saying how far it got.

A gateway's SQLite store is in WAL mode. A `cp` of its file while it runs holds only what SQLite had
folded into the file, a prefix of the log; `verify` on such a copy used to say "OK the log verifies"
and nothing more. Here the live log is a real store appended by a task, with signed checkpoints.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import stat
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from broker.audit.entry import EntryDraft, EntryKind
from broker.audit.stores.base import StoreBase
from broker.audit.stores.checkpointer import Checkpointer
from broker.audit.stores.source import open_source
from broker.audit.stores.sqlite import SqliteAuditStore
from broker.cli.audit import audit_app
from broker.core.catalogue import sample_payloads
from broker.core.sealing import seal
from broker.core.trust import TrustStore
from broker.state.keystore import KeyStore
from tests.support.audit_logs import PG_DSN, drop_schemas, open_store, runner

BROKER = Path(sys.executable).with_name("broker")
CHECKPOINT_EVERY = 5


class LiveLog:
    """RU's gateway log as the gateway writes it: sealed SENT entries and a signed checkpoint every few."""

    def __init__(self, store: StoreBase, *, keys: KeyStore, trust: TrustStore, at: datetime) -> None:
        self.store = store
        self._at = at
        self._ministry = keys.signer("RU-MVD", at=at)
        self._checkpointer = Checkpointer(
            store=store, signer=keys.signer("RU-GW", at=at), trust=trust, clock=lambda: at
        )
        self.sent = 0

    async def send(self, count: int) -> None:
        for _ in range(count):
            sealed = seal(sample_payloads()["legislation.change"], sender="RU-MVD", recipient="TJ-MOL",
                          signer=self._ministry, created_at=self._at)  # fmt: skip
            await self.store.append(
                [EntryDraft(kind=EntryKind.SENT, time=self._at, message_id=sealed.envelope.id,
                            message_type="legislation.change", peer="TJ-MOL", envelope=sealed.raw)]
            )  # fmt: skip
            self.sent += 1
            if self.sent % CHECKPOINT_EVERY == 0:
                await self._checkpointer.checkpoint_now()


@asynccontextmanager
async def live_log(path: Path, keys: KeyStore, trust: TrustStore, at: datetime) -> AsyncIterator[LiveLog]:
    store = await SqliteAuditStore.open(path)
    try:
        yield LiveLog(store, keys=keys, trust=trust, at=at)
    finally:
        await store.close()


@pytest.fixture
def at(pki_now: datetime) -> datetime:
    return pki_now + timedelta(days=30)


@pytest.fixture
def live(tmp_path: Path) -> Path:
    """The gateway's store."""
    return tmp_path / "gateway" / "audit.sqlite"


@pytest.fixture
def snap(tmp_path: Path) -> Path:
    """Where the auditor's snapshot goes: a folder of its own."""
    (tmp_path / "auditor").mkdir()
    return tmp_path / "auditor" / "ru.sqlite"


def verify(store: Path, keys: KeyStore) -> Any:
    return runner.invoke(
        audit_app, ["verify", "--store", str(store), "--keys", str(keys.root), "--no-progress"]
    )


def one_line(output: str) -> str:
    return " ".join(output.split())


async def broker_snapshot(live: Path, out: Path) -> tuple[int, str]:
    """`broker audit snapshot` in a process of its own, as an operator runs it beside the gateway."""
    process = await asyncio.create_subprocess_exec(
        str(BROKER), "audit", "snapshot", "--store", str(live), "--out", str(out),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


def test_a_snapshot_taken_while_the_gateway_writes_verifies_and_reaches_a_checkpoint(
    live: Path, snap: Path, dev_pki: KeyStore, trust: TrustStore, at: datetime
) -> None:

    async def scenario() -> tuple[int, int, int, str]:
        async with live_log(live, dev_pki, trust, at) as log:
            await log.send(2 * CHECKPOINT_EVERY)
            done = asyncio.Event()

            async def keep_writing() -> None:
                while not done.is_set():
                    await log.send(1)

            writer = asyncio.create_task(keep_writing())
            before = await log.store.size()
            status, output = await broker_snapshot(live, snap)
            done.set()
            await writer
            assert status == 0, output
            return before, await log.store.size(), log.sent, output

    before, after, sent, output = asyncio.run(scenario())

    result = verify(snap, dev_pki)
    assert result.exit_code == 0, result.output
    text = one_line(result.output)
    reached = int(text.split("OK the log verifies: ")[1].split(" entries")[0])
    assert before <= reached <= after  # what the log held at some moment of the snapshot
    assert f"{snap}: {reached} entries of {live}" in one_line(output)
    covered = int(text.split("the last signed checkpoint covers the first ")[1].split(",")[0])
    assert covered >= CHECKPOINT_EVERY
    assert "signed by RU-GW at" in text
    assert "warning" not in text
    assert sent > 2 * CHECKPOINT_EVERY  # the gateway went on writing while the snapshot ran


def test_the_snapshot_is_consistent_beside_an_open_write_transaction(
    live: Path, snap: Path, dev_pki: KeyStore, trust: TrustStore, at: datetime
) -> None:
    """Deterministically mid-write: committed entries only in the WAL, another write open and holding
    the lock. The snapshot has every committed entry, none of the open write, and does not wait."""

    async def scenario() -> tuple[int, str]:
        async with live_log(live, dev_pki, trust, at) as log:
            await log.send(2 * CHECKPOINT_EVERY)  # two checkpoints: 12 entries, all still in the WAL
            committed = await log.store.size()
            writing = sqlite3.connect(live, isolation_level=None)
            try:
                writing.execute("BEGIN IMMEDIATE")
                writing.execute("INSERT INTO audit_subtrees (level, idx, hash) VALUES (99, 0, x'00')")
                status, output = await broker_snapshot(live, snap)
                writing.execute("ROLLBACK")
            finally:
                writing.close()
            assert status == 0, output
            return committed, output

    committed, output = asyncio.run(scenario())

    assert f"{snap}: {committed} entries" in one_line(output)
    assert "names the first 11 entries" in one_line(output)
    copy = sqlite3.connect(snap)
    try:
        assert copy.execute("SELECT count(*) FROM audit_subtrees WHERE level = 99").fetchone() == (0,)
    finally:
        copy.close()
    result = verify(snap, dev_pki)
    assert result.exit_code == 0, result.output
    assert f"OK the log verifies: {committed} entries, [0, {committed})" in one_line(result.output)


def test_verify_shows_a_cp_of_a_live_store_as_the_prefix_it_is(
    live: Path, snap: Path, dev_pki: KeyStore, trust: TrustStore, at: datetime
) -> None:
    copied = snap.with_name("cp.sqlite")

    async def scenario() -> None:
        async with live_log(live, dev_pki, trust, at) as log:
            await log.send(2 * CHECKPOINT_EVERY)  # entries 0-11, two checkpoints
            # What SQLite's automatic checkpoint does after 1000 pages: the WAL so far into the file.
            folding = sqlite3.connect(live)
            try:
                folding.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                folding.close()
            await log.send(2 * CHECKPOINT_EVERY)  # entries 12-23: only in the WAL
            shutil.copyfile(live, copied)  # what the auditor did
            status, output = await broker_snapshot(live, snap)
            assert status == 0, output

    asyncio.run(scenario())

    from_cp = verify(copied, dev_pki)
    assert from_cp.exit_code == 0, from_cp.output
    text = one_line(from_cp.output)
    assert "OK the log verifies: 12 entries, [0, 12); the last signed checkpoint covers the first 11" in text
    assert "WAL-mode database without its -wal file" in text
    assert "broker audit snapshot" in text

    from_snapshot = verify(snap, dev_pki)
    assert from_snapshot.exit_code == 0, from_snapshot.output
    text = one_line(from_snapshot.output)
    assert "OK the log verifies: 24 entries, [0, 24); the last signed checkpoint covers the first 23" in text
    assert "warning" not in text


def test_a_snapshot_is_one_private_file_and_never_overwrites(
    live: Path, snap: Path, dev_pki: KeyStore, trust: TrustStore, at: datetime
) -> None:
    async def scenario() -> tuple[tuple[int, str], bytes, tuple[int, str]]:
        async with live_log(live, dev_pki, trust, at) as log:
            await log.send(3)
            first = await broker_snapshot(live, snap)
            taken = await asyncio.to_thread(snap.read_bytes)
            return first, taken, await broker_snapshot(live, snap)

    (first_status, first_output), taken, (second_status, second_output) = asyncio.run(scenario())
    assert snap.read_bytes() == taken  # the second snapshot left the first alone

    assert first_status == 0, first_output
    assert "no signed checkpoint yet" in one_line(first_output)
    assert stat.S_IMODE(snap.stat().st_mode) == 0o600
    assert snap.read_bytes()[18] == 1  # rollback journal: the file is the whole snapshot
    assert sorted(p.name for p in snap.parent.iterdir()) == ["ru.sqlite"]  # no -wal, no partial file
    result = verify(snap, dev_pki)
    assert result.exit_code == 0, result.output
    assert "OK the log verifies: 3 entries, [0, 3); no signed checkpoint covers them" in one_line(
        result.output
    )
    assert sorted(p.name for p in snap.parent.iterdir()) == ["ru.sqlite"]
    assert second_status == 2
    assert "[config.invalid]" in second_output
    assert "exists" in second_output


def test_a_snapshot_of_a_missing_store_is_an_error(tmp_path: Path) -> None:
    status, output = asyncio.run(broker_snapshot(tmp_path / "nosuch.sqlite", tmp_path / "out.sqlite"))
    assert status == 2
    assert "[config.invalid] no audit store at" in output
    assert not (tmp_path / "out.sqlite").exists()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_an_auditors_source_reads_one_state_of_the_log_while_it_grows(
    backend: str, tmp_path: Path, dev_pki: KeyStore, trust: TrustStore, at: datetime
) -> None:
    locator = (
        str(tmp_path / "audit.sqlite") if backend == "sqlite" else f"{PG_DSN}#audit_snap_{uuid4().hex[:12]}"
    )

    async def scenario() -> tuple[int, int, int, int]:
        store = await open_store(backend, locator)
        try:
            log = LiveLog(store, keys=dev_pki, trust=trust, at=at)
            await log.send(3)
            source = await open_source(locator)
            try:
                first = await source.size()
                await log.send(CHECKPOINT_EVERY)  # a checkpoint too
                later = await source.size()
                rows = len([row async for row in source.rows()])
            finally:
                await source.close()
            fresh = await open_source(locator)
            try:
                return first, later, rows, await fresh.size()
            finally:
                await fresh.close()
        finally:
            await store.close()

    try:
        first, later, rows, fresh = asyncio.run(scenario())
    finally:
        if backend == "postgres":
            drop_schemas([locator.partition("#")[2]])
    assert (first, later, rows) == (3, 3, 3)
    assert fresh == 3 + CHECKPOINT_EVERY + 1
