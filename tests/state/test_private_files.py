"""State and personal data on disk are the service user's alone, under a permissive umask (issue 21,
item 10): 0600 files (SQLite's -wal and -shm too) in 0700 folders, and existing files tightened."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapters.pipeline import load_adapter, render_to_folder
from adapters.tj.registry import AGENCIES
from adapters.tj.sync import SyncState
from broker.audit.stores.sqlite import SqliteAuditStore
from broker.cli.audit import audit_app
from broker.core.catalogue import sample_payloads
from broker.exchange.subscriber import HandledLedger
from broker.state.key_vault import KeyVault
from broker.state.keystore import KeyStore
from broker.state.outbox import Outbox


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    """What a service started from a shell usually has: group and others may read what it creates."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _audit(path: Path) -> None:
    async def go() -> None:
        store = await SqliteAuditStore.open(path)
        await store.close()

    asyncio.run(go())


async def _use_outbox(path: Path) -> None:
    outbox = Outbox.open(path)
    try:
        await outbox.records(limit=1)
    finally:
        outbox._state.close()


async def _use_vault(path: Path) -> None:
    vault = KeyVault.open(path)  # no close of its own: its SqliteState is closed below
    try:
        await vault.put(uuid.uuid4(), "wrapped", at=datetime.now().astimezone())
        assert path.with_name(path.name + "-wal").exists()  # open, in WAL mode: side files exist
        assert path.with_name(path.name + "-shm").exists()
        for suffix in ("", "-wal", "-shm"):
            assert mode(path.with_name(path.name + suffix)) == 0o600, suffix
    finally:
        vault._state.close()


def _ledger(path: Path) -> None:
    ledger = HandledLedger(path)
    try:
        ledger.record(uuid.uuid4())
        for suffix in ("", "-wal", "-shm"):
            assert mode(path.with_name(path.name + suffix)) == 0o600, suffix
    finally:
        ledger.close()


def _sync_state(path: Path) -> None:
    assert SyncState(path=path).told(AGENCIES) == {}


STORES: dict[str, Callable[[Path], None]] = {
    "audit": _audit,
    "outbox": lambda path: asyncio.run(_use_outbox(path)),
    "key vault": lambda path: asyncio.run(_use_vault(path)),
    "subscriber ledger": _ledger,
    "tj registry sync": _sync_state,
}


@pytest.mark.parametrize("store", list(STORES))
def test_a_state_store_is_created_0600_in_a_0700_folder(store: str, tmp_path: Path) -> None:
    state_dir = tmp_path / "var" / "tj"
    path = state_dir / "store.sqlite"
    STORES[store](path)
    assert mode(state_dir) == 0o700
    assert mode(path) == 0o600
    for suffix in ("-wal", "-shm", "-journal"):
        side = path.with_name(path.name + suffix)
        assert not side.exists() or mode(side) == 0o600, suffix


@pytest.mark.parametrize("store", list(STORES))
def test_an_existing_world_readable_store_is_tightened_when_opened(store: str, tmp_path: Path) -> None:
    state_dir = tmp_path / "tj"
    state_dir.mkdir(mode=0o755)
    path = state_dir / "store.sqlite"
    sqlite3.connect(path).close()
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.touch()
        leftover.chmod(0o644)  # as an older release left them
    state_dir.chmod(0o755)

    STORES[store](path)

    assert mode(state_dir) == 0o700
    for suffix in ("", "-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        assert not side.exists() or mode(side) == 0o600, suffix


def test_a_rendered_alert_with_personal_data_is_private(tmp_path: Path) -> None:
    adapter = load_adapter("TJ", state_dir=tmp_path / "state")
    payload = sample_payloads()["worker.death"]
    fresh = tmp_path / "alerts"
    existing = tmp_path / "shared"
    existing.mkdir(mode=0o755)
    existing.chmod(0o755)
    for out_dir in (fresh, existing):
        path = render_to_folder(adapter, payload, message_id=uuid.uuid4(), out_dir=out_dir, fmt="csv-tg")
        assert mode(path) == 0o600
        assert mode(out_dir) == 0o700


def test_the_key_store_keeps_keys_private_under_a_permissive_umask(tmp_path: Path, pki_now: datetime) -> None:
    root = tmp_path / "keys"
    root.mkdir(mode=0o755)  # made by hand before the first `broker keys init`
    root.chmod(0o755)
    store = KeyStore(root=root)
    store.init_country("TJ", now=pki_now)
    store.issue("TJ-MOL", "TJ", now=pki_now)
    store.issue_encryption("TJ-MOL", now=pki_now)

    keys = sorted(root.rglob("*.key.pem"))
    assert len(keys) == 3  # CA, signing, key agreement
    assert {mode(key) for key in keys} == {0o600}
    assert {mode(folder) for folder in [root, *root.rglob("*")] if folder.is_dir()} == {0o700}


def test_audit_exports_and_proofs_are_written_0600(tmp_path: Path) -> None:
    store = tmp_path / "audit.sqlite"
    _audit(store)
    out = tmp_path / "export.jsonl"
    out.touch()
    out.chmod(0o644)
    result = CliRunner().invoke(audit_app, ["export", "--store", str(store), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert mode(out) == 0o600
