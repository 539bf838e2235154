"""The key vault: each personal message's wrapped data key, kept apart from the audit log so it can be erased.

The audit log is append-only and keeps the signed envelope, whose personal payload is ciphertext.
What opens it, the `x-sealed-key` header (the data key wrapped with HPKE to its holders), lives here,
one row per message. Destroying the row is erasure: the ciphertext in the log stays, every hash and
signature still verifies, and nobody can read the personal data any more.

SQLite with `secure_delete`, and the WAL truncated after a deletion, so the erased key does not
linger in free pages or in the write-ahead log.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from broker.core.errors import ConfigError, Reason
from broker.state.sqlite_state import SqliteState

VAULT_FILE = "key-vault.sqlite"  # in a gateway's country state folder

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sealed_keys (
    message_id TEXT PRIMARY KEY,
    wrapped TEXT NOT NULL,
    stored_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS erasures (
    message_id TEXT PRIMARY KEY,
    erased_at TEXT NOT NULL
);
"""


class KeyVault:
    def __init__(self, *, state: SqliteState) -> None:
        self._state = state

    @classmethod
    def open(cls, path: Path) -> KeyVault:
        # secure_delete overwrites a destroyed key's page instead of leaving it in free space.
        return cls(
            state=SqliteState.open(path, name="key vault", schema=_SCHEMA, pragmas=("secure_delete=ON",))
        )

    async def _run(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        return await self._state.query(sql, params)

    async def put(self, message_id: UUID, wrapped: str, *, at: datetime) -> None:
        """Keep the wrapped data key of a message; a redelivery keeps the first copy, an erased one stays erased."""
        await self._run(
            "INSERT OR IGNORE INTO sealed_keys (message_id, wrapped, stored_at) "
            "SELECT ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM erasures WHERE message_id = ?)",
            (str(message_id), wrapped, at.isoformat(), str(message_id)),
        )

    async def get(self, message_id: UUID) -> str | None:
        rows = await self._run("SELECT wrapped FROM sealed_keys WHERE message_id = ?", (str(message_id),))
        return str(rows[0][0]) if rows else None

    async def destroy(self, message_id: UUID, *, at: datetime) -> bool:
        """Erase the message's data key for good; True if there was one. The erasure itself is recorded."""

        def work(db: sqlite3.Connection) -> bool:
            with db:
                db.execute("BEGIN IMMEDIATE")
                deleted = db.execute(
                    "DELETE FROM sealed_keys WHERE message_id = ?", (str(message_id),)
                ).rowcount
                db.execute(
                    "INSERT OR IGNORE INTO erasures (message_id, erased_at) VALUES (?, ?)",
                    (str(message_id), at.isoformat()),
                )
            # Copy the WAL back and truncate it, so the old page is overwritten everywhere.
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return deleted > 0

        return await self._state.call(work)

    async def erased_at(self, message_id: UUID) -> datetime | None:
        rows = await self._run("SELECT erased_at FROM erasures WHERE message_id = ?", (str(message_id),))
        return datetime.fromisoformat(str(rows[0][0])) if rows else None

    def close(self) -> None:
        self._state.close()


@dataclass(frozen=True)
class VaultRows:
    """What a vault holds about some messages: each one's wrapped data key, or when it was erased."""

    wrapped: dict[UUID, str] = field(default_factory=dict)
    erased: dict[UUID, datetime] = field(default_factory=dict)


_LOOKUP_CHUNK = 500  # ids per statement, under SQLite's limit on bound parameters


def read_vault(path: Path, message_ids: Iterable[UUID]) -> VaultRows:
    """An auditor's look into a vault (a gateway's own file, or a copy): read-only, never created.

    Opened with SQLite's `mode=ro`, so a mistyped path is an error rather than a new empty vault
    that would make every sealed message look unsearchable.
    """
    if not path.is_file():
        raise ConfigError(Reason.CONFIG_INVALID, f"no key vault at {path}")
    rows = VaultRows()
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ConfigError(Reason.CONFIG_INVALID, f"cannot open key vault {path}: {exc}") from None
    try:
        ids = sorted({str(message_id) for message_id in message_ids})
        for start in range(0, len(ids), _LOOKUP_CHUNK):
            chunk = ids[start : start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            for message_id, wrapped in db.execute(
                f"SELECT message_id, wrapped FROM sealed_keys WHERE message_id IN ({marks})",  # noqa: S608
                chunk,
            ):
                rows.wrapped[UUID(str(message_id))] = str(wrapped)
            for message_id, erased_at in db.execute(
                f"SELECT message_id, erased_at FROM erasures WHERE message_id IN ({marks})",  # noqa: S608
                chunk,
            ):
                rows.erased[UUID(str(message_id))] = datetime.fromisoformat(str(erased_at))
    except sqlite3.Error as exc:
        raise ConfigError(Reason.CONFIG_INVALID, f"cannot read key vault {path}: {exc}") from None
    finally:
        db.close()
    return rows
