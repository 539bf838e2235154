"""The console's own records, in `console.sqlite` beside the gateway's state: who did what, which
alert a consulate handled, and which log entries are alerts for which nationals.

The audit log has one writer, the gateway; the console never writes to it. Operators' actions and
consulates' "handled" marks are recorded here (time, authority, token id) and logged as
`console.action`. The alert index holds no personal data beyond the worker's citizenship, which
decides which consulate may see an entry; the alert itself is opened from the log for each page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

from broker.state.sqlite_state import SqliteState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    authority TEXT NOT NULL,
    token_id TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS handled (
    consulate TEXT NOT NULL,
    message_id TEXT NOT NULL,
    at TEXT NOT NULL,
    token_id TEXT NOT NULL,
    PRIMARY KEY (consulate, message_id)
);
CREATE TABLE IF NOT EXISTS alerts (
    audit_index INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL,
    message_type TEXT NOT NULL,
    citizenship TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_by_citizenship ON alerts (citizenship, audit_index);
CREATE INDEX IF NOT EXISTS alerts_by_message ON alerts (message_id);
CREATE TABLE IF NOT EXISTS alert_cursor (one INTEGER PRIMARY KEY CHECK (one = 1), position INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class Action:
    at: datetime
    authority: str
    token_id: str
    action: str
    target: str
    outcome: str


@dataclass(frozen=True)
class Handled:
    at: datetime
    token_id: str


class ConsoleStore:
    def __init__(self, path: Path) -> None:
        self._state = SqliteState.open(path, name="console", schema=_SCHEMA)

    async def record(self, *, authority: str, token_id: str, action: str, target: str, outcome: str) -> None:
        await self._state.query(
            "INSERT INTO actions (at, authority, token_id, action, target, outcome) VALUES (?, ?, ?, ?, ?, ?)",
            (datetime.now(UTC).isoformat(), authority, token_id, action, target, outcome),
        )

    async def actions(self, limit: int = 20) -> list[Action]:
        rows = await self._state.query(
            "SELECT at, authority, token_id, action, target, outcome FROM actions ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [Action(datetime.fromisoformat(r[0]), *(str(v) for v in r[1:])) for r in rows]

    async def mark_handled(self, consulate: str, message_id: UUID, *, token_id: str) -> None:
        await self._state.query(
            "INSERT OR IGNORE INTO handled (consulate, message_id, at, token_id) VALUES (?, ?, ?, ?)",
            (consulate, str(message_id), datetime.now(UTC).isoformat(), token_id),
        )

    async def handled(self, consulate: str, message_ids: list[UUID]) -> dict[UUID, Handled]:
        if not message_ids:
            return {}
        marks = ",".join("?" * len(message_ids))
        rows = await self._state.query(
            f"SELECT message_id, at, token_id FROM handled WHERE consulate = ? AND message_id IN ({marks})",  # noqa: S608 - marks only
            (consulate, *(str(m) for m in message_ids)),
        )
        return {UUID(str(m)): Handled(datetime.fromisoformat(str(at)), str(t)) for m, at, t in rows}

    # -- the alert index -------------------------------------------------------------------------
    async def alert_cursor(self) -> int:
        rows = await self._state.query("SELECT position FROM alert_cursor WHERE one = 1")
        return int(rows[0][0]) if rows else 0

    async def add_alerts(self, found: list[tuple[int, UUID, str, str]], *, position: int) -> None:
        for index, message_id, message_type, citizenship in found:
            await self._state.query(
                "INSERT OR IGNORE INTO alerts (audit_index, message_id, message_type, citizenship) VALUES (?, ?, ?, ?)",
                (index, str(message_id), message_type, citizenship),
            )
        await self._state.query(
            "INSERT INTO alert_cursor (one, position) VALUES (1, ?) "
            "ON CONFLICT (one) DO UPDATE SET position = excluded.position",
            (position,),
        )

    async def alerts(self, citizenship: str, *, before: int | None, limit: int) -> list[tuple[int, UUID]]:
        """(audit index, message id) of alerts about `citizenship`'s nationals, newest first."""
        rows = await self._state.query(
            "SELECT audit_index, message_id FROM alerts WHERE citizenship = ? AND audit_index < ? "
            "ORDER BY audit_index DESC LIMIT ?",
            (citizenship, before if before is not None else 2**62, limit),
        )
        return [(int(i), UUID(str(m))) for i, m in rows]

    async def citizenship_of(self, message_id: UUID) -> str | None:
        """Whose national an alert is about (None: no alert of that id)."""
        rows = await self._state.query(
            "SELECT citizenship FROM alerts WHERE message_id = ?", (str(message_id),)
        )
        return str(rows[0][0]) if rows else None

    def close(self) -> None:
        self._state.close()
