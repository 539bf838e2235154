"""A small SQLite file of gateway state (the outbox, the key vault).

WAL with `synchronous=FULL`, run off the event loop; driver errors become `audit.unavailable` so a
gateway holds its messages instead of crashing.

Statements (`query`) are group-committed: those queued while a transaction is being made durable
all go into the next one, each inside its own savepoint so one failing statement fails only its
caller. A caller still gets its answer only after the commit. Under load this turns hundreds of
thread hand-offs and commits per second into a few, which is what bounded the gateway's throughput.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from broker.core.errors import AuditError, Reason
from broker.state.private_files import prepare_database

T = TypeVar("T")


Statement = tuple[str, tuple[object, ...]]
Rows = list[tuple[Any, ...]]


def run_statements(db: sqlite3.Connection, statements: Sequence[Statement]) -> list[Rows | sqlite3.Error]:
    """Run `statements` in one transaction; a statement that fails is undone alone and returned as its error."""
    outcomes: list[Rows | sqlite3.Error] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        for sql, params in statements:
            db.execute("SAVEPOINT statement")
            try:
                outcomes.append(list(db.execute(sql, params).fetchall()))
            except sqlite3.Error as exc:
                db.execute("ROLLBACK TO statement")
                outcomes.append(exc)
            db.execute("RELEASE statement")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return outcomes


@dataclass
class _Queued:
    statement: Statement
    future: asyncio.Future[Rows]


class SqliteState:
    def __init__(self, *, connection: sqlite3.Connection, name: str) -> None:
        self._db = connection
        self._name = name
        self._lock = asyncio.Lock()
        self._queued: list[_Queued] = []
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    def open(cls, path: Path, *, name: str, schema: str, pragmas: Sequence[str] = ()) -> SqliteState:
        try:
            prepare_database(path)  # 0600 in 0700 before SQLite creates it
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            for pragma in (*pragmas, "journal_mode=WAL", "synchronous=FULL"):
                db.execute(f"PRAGMA {pragma}")
            db.executescript(schema)
        except (OSError, sqlite3.Error) as exc:
            raise AuditError(Reason.AUDIT_UNAVAILABLE, f"cannot open {name} {path}: {exc}") from None
        return cls(connection=db, name=name)

    async def call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` on the connection in a worker thread, one caller at a time."""
        async with self._lock:
            try:
                return await asyncio.to_thread(work, self._db)
            except sqlite3.Error as exc:
                raise AuditError(Reason.AUDIT_UNAVAILABLE, f"{self._name}: {exc}") from None

    async def query(self, sql: str, params: tuple[object, ...] = ()) -> Rows:
        """Run one statement in the next group commit; its rows once that commit is durable."""
        loop = asyncio.get_running_loop()
        queued = _Queued((sql, params), loop.create_future())
        self._queued.append(queued)
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush(), name=f"{self._name}-group-commit")
        return await queued.future

    async def _flush(self) -> None:
        while self._queued:
            batch = [queued for queued in self._queued if not queued.future.cancelled()]
            self._queued = []
            if not batch:
                continue
            async with self._lock:  # after any exclusive `call` in progress
                try:
                    outcomes = await asyncio.to_thread(
                        run_statements, self._db, [queued.statement for queued in batch]
                    )
                except sqlite3.Error as exc:
                    error = AuditError(Reason.AUDIT_UNAVAILABLE, f"{self._name}: {exc}")
                    for queued in batch:
                        if not queued.future.done():
                            queued.future.set_exception(error)
                    continue
            for queued, outcome in zip(batch, outcomes, strict=True):
                if queued.future.done():
                    continue
                if isinstance(outcome, sqlite3.Error):
                    queued.future.set_exception(
                        AuditError(Reason.AUDIT_UNAVAILABLE, f"{self._name}: {outcome}")
                    )
                else:
                    queued.future.set_result(outcome)

    def close(self) -> None:
        self._db.close()
