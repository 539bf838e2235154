"""Reading another process's SQLite state without taking its write lock: the HTTP API beside a gateway.

The gateway's own handles (`SqliteState`) run every statement in a write transaction, which is
right for the process that writes and wrong for a reader polling beside it. A reader here opens the
file `mode=ro` for each query, in a worker thread; WAL lets it read while the gateway writes. A file
the gateway has not made yet reads as empty.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from broker.core.errors import AuditError, Reason

Rows = list[tuple[Any, ...]]


class ReadOnlyDatabase:
    def __init__(self, path: Path, *, name: str) -> None:
        self.path = path
        self._name = name

    async def query(self, sql: str, params: tuple[object, ...] = ()) -> Rows:
        return await asyncio.to_thread(self._query, sql, params)

    def _query(self, sql: str, params: tuple[object, ...]) -> Rows:
        if not self.path.is_file():
            return []
        try:
            db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
        except sqlite3.Error as exc:
            raise AuditError(
                Reason.AUDIT_UNAVAILABLE, f"cannot open {self._name} {self.path}: {exc}"
            ) from exc
        try:
            return list(db.execute(sql, params).fetchall())
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []  # created, but its schema not yet written
            raise AuditError(
                Reason.AUDIT_UNAVAILABLE, f"cannot read {self._name} {self.path}: {exc}"
            ) from exc
        except sqlite3.Error as exc:
            raise AuditError(
                Reason.AUDIT_UNAVAILABLE, f"cannot read {self._name} {self.path}: {exc}"
            ) from exc
        finally:
            db.close()
