"""The sender's record of each message it sent: sent → confirmed → receipted | rejected.

A small SQLite table beside the audit log. The audit log proves what happened; this table answers
"what is still waiting for a receipt, and since when" without scanning the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from uuid import UUID

from broker.state.readonly import ReadOnlyDatabase
from broker.state.sqlite_state import SqliteState


class SendState(StrEnum):
    SENT = "sent"
    CONFIRMED = "confirmed"
    RECEIPTED = "receipted"
    REJECTED = "rejected"


@dataclass(frozen=True)
class OutboxRecord:
    message_id: UUID
    message_type: str
    recipient: str
    raw: bytes
    sha256: str
    state: SendState
    sent_at: datetime
    deadline: datetime
    attempts: int
    reason: str | None
    receipt_at: datetime | None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    message_id TEXT PRIMARY KEY,
    message_type TEXT NOT NULL,
    recipient TEXT NOT NULL,
    raw BLOB NOT NULL,
    sha256 TEXT NOT NULL,
    state TEXT NOT NULL,
    sent_at TEXT NOT NULL,
    deadline TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    reason TEXT,
    receipt_at TEXT
);
CREATE INDEX IF NOT EXISTS outbox_open ON outbox (state, deadline);
CREATE INDEX IF NOT EXISTS outbox_sha256 ON outbox (sha256);
-- The console pages the outbox newest first and counts it by the hour from this index alone.
CREATE INDEX IF NOT EXISTS outbox_by_time ON outbox (sent_at, message_id, message_type, state);
"""
_COLUMNS = (
    "message_id, message_type, recipient, raw, sha256, state, sent_at, deadline, attempts, reason, receipt_at"
)


def _row(row: tuple[Any, ...]) -> OutboxRecord:
    (
        message_id,
        message_type,
        recipient,
        raw,
        sha256,
        state,
        sent_at,
        deadline,
        attempts,
        reason,
        receipt_at,
    ) = row
    return OutboxRecord(
        message_id=UUID(str(message_id)),
        message_type=str(message_type),
        recipient=str(recipient),
        raw=bytes(raw),
        sha256=str(sha256),
        state=SendState(str(state)),
        sent_at=datetime.fromisoformat(str(sent_at)),
        deadline=datetime.fromisoformat(str(deadline)),
        attempts=int(attempts),
        reason=None if reason is None else str(reason),
        receipt_at=None if receipt_at is None else datetime.fromisoformat(str(receipt_at)),
    )


class Outbox:
    def __init__(self, *, state: SqliteState) -> None:
        self._state = state

    @classmethod
    def open(cls, path: Path) -> Outbox:
        return cls(state=SqliteState.open(path, name="outbox", schema=_SCHEMA))

    async def _run(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        return await self._state.query(sql, params)

    async def record_sent(
        self,
        *,
        message_id: UUID,
        message_type: str,
        recipient: str,
        raw: bytes,
        sha256: str,
        deadline: datetime,
    ) -> None:
        now = datetime.now(UTC).isoformat()
        await self._run(
            f"INSERT OR IGNORE INTO outbox ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",  # noqa: S608 - constant
            (
                str(message_id),
                message_type,
                recipient,
                raw,
                sha256,
                SendState.SENT,
                now,
                deadline.isoformat(),
                1,
                None,
                None,
            ),
        )

    async def mark_confirmed(self, message_id: UUID) -> None:
        await self._run(
            "UPDATE outbox SET state=? WHERE message_id=? AND state=?",
            (SendState.CONFIRMED, str(message_id), SendState.SENT),
        )

    async def mark_receipt(
        self, message_id: UUID, *, accepted: bool, reason: str | None, at: datetime
    ) -> None:
        state = SendState.RECEIPTED if accepted else SendState.REJECTED
        await self._run(
            "UPDATE outbox SET state=?, reason=?, receipt_at=? WHERE message_id=?",
            (state, reason, at.isoformat(), str(message_id)),
        )

    async def settle(
        self,
        message_id: UUID,
        *,
        sha256: str,
        accepted: bool,
        reason: str | None,
        at: datetime,
        recipient_country: str | None = None,
    ) -> datetime | None:
        """`mark_receipt` for an outstanding record of exactly these bytes, in one statement; with
        `recipient_country`, only a record addressed to an authority of that country (authority ids
        start with it: a peer's gateway answers for its own country's messages only).

        Returns when the message was sent, or None when nothing changed (unknown id, other bytes,
        another country's message, already settled): the caller then reads the record to say which.
        """
        state = SendState.RECEIPTED if accepted else SendState.REJECTED
        prefix = f"{recipient_country}-" if recipient_country else ""
        rows = await self._run(
            "UPDATE outbox SET state=?, reason=?, receipt_at=? "
            "WHERE message_id=? AND sha256=? AND state IN (?, ?) AND substr(recipient, 1, ?)=? "
            "RETURNING sent_at",
            (
                state, reason, at.isoformat(), str(message_id), sha256, SendState.SENT, SendState.CONFIRMED,
                len(prefix), prefix,
            ),
        )  # fmt: skip
        return datetime.fromisoformat(str(rows[0][0])) if rows else None

    async def note_rejection(self, message_id: UUID, *, reason: str) -> None:
        """Keep the reason of a negative receipt that leaves the message outstanding (to be re-sent)."""
        await self._run(
            "UPDATE outbox SET reason=? WHERE message_id=? AND state IN (?, ?)",
            (reason, str(message_id), SendState.SENT, SendState.CONFIRMED),
        )

    async def mark_resent(self, message_id: UUID, *, deadline: datetime) -> None:
        await self._run(
            "UPDATE outbox SET attempts=attempts+1, deadline=? WHERE message_id=?",
            (deadline.isoformat(), str(message_id)),
        )

    async def postpone(self, message_id: UUID, *, deadline: datetime) -> None:
        """A new deadline without a new copy (an earlier copy still waits to be carried)."""
        await self._run(
            "UPDATE outbox SET deadline=? WHERE message_id=? AND state IN (?, ?)",
            (deadline.isoformat(), str(message_id), SendState.SENT, SendState.CONFIRMED),
        )

    async def get(self, message_id: UUID) -> OutboxRecord | None:
        rows = await self._run(f"SELECT {_COLUMNS} FROM outbox WHERE message_id=?", (str(message_id),))  # noqa: S608
        return _row(rows[0]) if rows else None

    async def find_by_sha256(self, sha256: str) -> OutboxRecord | None:
        """The message whose bytes hash to `sha256` (what the peer names when it could not read an id)."""
        rows = await self._run(
            f"SELECT {_COLUMNS} FROM outbox WHERE sha256=? ORDER BY sent_at DESC LIMIT 1",  # noqa: S608
            (sha256,),
        )
        return _row(rows[0]) if rows else None

    async def overdue(self, now: datetime) -> list[OutboxRecord]:
        rows = await self._run(
            f"SELECT {_COLUMNS} FROM outbox WHERE state IN (?, ?) AND deadline < ? ORDER BY deadline",  # noqa: S608
            (SendState.SENT, SendState.CONFIRMED, now.isoformat()),
        )
        return [_row(r) for r in rows]

    async def outstanding_count(self) -> int:
        rows = await self._run(
            "SELECT count(*) FROM outbox WHERE state IN (?, ?)", (SendState.SENT, SendState.CONFIRMED)
        )
        return int(rows[0][0])

    async def records(self, limit: int = 100) -> list[OutboxRecord]:
        rows = await self._run(f"SELECT {_COLUMNS} FROM outbox ORDER BY sent_at DESC LIMIT ?", (limit,))  # noqa: S608
        return [_row(r) for r in rows]

    def close(self) -> None:
        self._state.close()


class OutboxReader:
    """The outbox as another process reads it (the HTTP API): read-only, never the gateway's lock."""

    def __init__(self, path: Path) -> None:
        self._db = ReadOnlyDatabase(path, name="outbox")

    async def get(self, message_id: UUID) -> OutboxRecord | None:
        rows = await self._db.query(f"SELECT {_COLUMNS} FROM outbox WHERE message_id=?", (str(message_id),))  # noqa: S608
        return _row(rows[0]) if rows else None

    async def states(self, message_ids: list[UUID]) -> dict[UUID, SendState]:
        """The state of each of `message_ids` that is in the outbox (one query for many waiters)."""
        if not message_ids:
            return {}
        marks = ",".join("?" * len(message_ids))
        rows = await self._db.query(
            f"SELECT message_id, state FROM outbox WHERE message_id IN ({marks})",  # noqa: S608 - marks only
            tuple(str(m) for m in message_ids),
        )
        return {UUID(str(message_id)): SendState(str(state)) for message_id, state in rows}

    async def page(self, where: OutboxFilter, *, limit: int) -> list[OutboxRecord]:
        """Newest first, `limit` at most, older than `where.before` (sent_at, message_id) if given."""
        clauses, params = where.sql()
        rows = await self._db.query(
            f"SELECT {_COLUMNS} FROM outbox {clauses} ORDER BY sent_at DESC, message_id DESC LIMIT ?",  # noqa: S608 - clauses are ours
            (*params, limit),
        )
        return [_row(r) for r in rows]

    async def hourly(self, since: datetime) -> list[tuple[str, str, str, int]]:
        """(hour as `YYYY-MM-DDTHH`, type, state, count) of the messages sent since `since`."""
        rows = await self._db.query(
            "SELECT substr(sent_at, 1, 13), message_type, state, count(*) FROM outbox WHERE sent_at >= ? "
            "GROUP BY 1, 2, 3",
            (since.astimezone(UTC).isoformat(),),
        )
        return [(str(h), str(t), str(s), int(n)) for h, t, s, n in rows]

    async def oldest_waiting(self) -> OutboxRecord | None:
        """The message sent longest ago that still waits for its receipt."""
        rows = await self._db.query(
            f"SELECT {_COLUMNS} FROM outbox WHERE state IN (?, ?) ORDER BY sent_at LIMIT 1",  # noqa: S608
            (SendState.SENT, SendState.CONFIRMED),
        )
        return _row(rows[0]) if rows else None


@dataclass(frozen=True)
class OutboxFilter:
    """What the console's message list is narrowed to; every value is bound, never spliced."""

    message_type: str | None = None
    recipient: str | None = None
    state: SendState | None = None
    since: datetime | None = None
    until: datetime | None = None
    before: tuple[str, str] | None = None  # (sent_at, message_id) of the last row of the previous page

    def sql(self) -> tuple[str, tuple[object, ...]]:
        clauses: list[str] = []
        params: list[object] = []
        for column, value in (("message_type", self.message_type), ("recipient", self.recipient)):
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        if self.state is not None:
            clauses.append("state = ?")
            params.append(str(self.state))
        if self.since is not None:
            clauses.append("sent_at >= ?")
            params.append(self.since.astimezone(UTC).isoformat())
        if self.until is not None:
            clauses.append("sent_at < ?")
            params.append(self.until.astimezone(UTC).isoformat())
        if self.before is not None:
            clauses.append("(sent_at, message_id) < (?, ?)")
            params.extend(self.before)
        return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)
