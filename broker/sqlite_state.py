"""A small SQLite file of gateway state (the outbox, the key vault).

WAL with `synchronous=FULL`, one unit of work at a time, run off the event loop; driver errors
become `audit.unavailable` so a gateway holds its messages instead of crashing.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from broker.errors import AuditError, Reason

T = TypeVar("T")


class SqliteState:
    def __init__(self, *, connection: sqlite3.Connection, name: str) -> None:
        self._db = connection
        self._name = name
        self._lock = asyncio.Lock()

    @classmethod
    def open(cls, path: Path, *, name: str, schema: str, pragmas: Sequence[str] = ()) -> SqliteState:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            for pragma in (*pragmas, "journal_mode=WAL", "synchronous=FULL"):
                db.execute(f"PRAGMA {pragma}")
            db.executescript(schema)
        except sqlite3.Error as exc:
            raise AuditError(Reason.AUDIT_UNAVAILABLE, f"cannot open {name} {path}: {exc}") from None
        return cls(connection=db, name=name)

    async def call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` on the connection in a worker thread, one caller at a time."""
        async with self._lock:
            try:
                return await asyncio.to_thread(work, self._db)
            except sqlite3.Error as exc:
                raise AuditError(Reason.AUDIT_UNAVAILABLE, f"{self._name}: {exc}") from None

    async def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        return await self.call(lambda db: list(db.execute(sql, params).fetchall()))

    def close(self) -> None:
        self._db.close()
