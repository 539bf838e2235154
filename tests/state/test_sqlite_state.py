"""Group commit of the outbox's and the key vault's statements."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.core.errors import AuditError, Reason
from broker.state.sqlite_state import SqliteState

SCHEMA = "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[SqliteState]:
    opened = SqliteState.open(tmp_path / "state.sqlite", name="test state", schema=SCHEMA)
    yield opened
    opened.close()


class _CountingConnection:
    """Counts the transactions the state begins."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.begun = 0
        db.set_trace_callback(self._trace)

    def _trace(self, statement: str) -> None:
        if statement.startswith("BEGIN"):
            self.begun += 1


async def test_concurrent_statements_share_commits_and_each_gets_its_rows(
    state: SqliteState, tmp_path: Path
) -> None:
    counter = _CountingConnection(state._db)
    await asyncio.gather(
        *(state.query("INSERT INTO items (name) VALUES (?)", (f"n{i}",)) for i in range(200))
    )
    assert counter.begun < 200  # they were grouped
    rows = await asyncio.gather(*(state.query("SELECT name FROM items WHERE id = ?", (i,)) for i in (1, 200)))
    assert rows == [[("n0",)], [("n199",)]]
    # Durable: another connection sees every row.
    other = sqlite3.connect(tmp_path / "state.sqlite")
    assert other.execute("SELECT count(*) FROM items").fetchone() == (200,)
    other.close()


async def test_a_failing_statement_fails_only_its_caller(state: SqliteState) -> None:
    outcomes = await asyncio.gather(
        state.query("INSERT INTO items (name) VALUES ('a')"),
        state.query("INSERT INTO items (name) VALUES ('a')"),  # violates UNIQUE
        state.query("INSERT INTO items (name) VALUES ('b')"),
        return_exceptions=True,
    )
    assert outcomes[0] == []
    assert outcomes[2] == []
    assert isinstance(outcomes[1], AuditError)
    assert outcomes[1].reason is Reason.AUDIT_UNAVAILABLE
    assert "UNIQUE" in outcomes[1].diagnostic
    assert await state.query("SELECT name FROM items ORDER BY name") == [("a",), ("b",)]


async def test_a_closed_database_is_an_audit_unavailable_error(state: SqliteState) -> None:
    state.close()
    with pytest.raises(AuditError) as caught:
        await state.query("SELECT 1")
    assert caught.value.reason is Reason.AUDIT_UNAVAILABLE
