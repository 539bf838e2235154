"""The gateway's record of the submissions it took: which request of which submitter made which message.

It makes a submission idempotent: the same request id from the same RabbitMQ user names the same
message, whether the ministry system retries after a lost answer or the broker redelivers after a
crash. The row is written before the message is sealed into the outbox, so a crash in between is
repaired by sealing again under the same message id. A small SQLite file beside the outbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

from broker.state.sqlite_state import SqliteState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS submissions (
    submitter TEXT NOT NULL,
    request_id TEXT NOT NULL,
    request_sha256 TEXT NOT NULL,
    message_id TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (submitter, request_id)
);
"""


@dataclass(frozen=True)
class SubmissionRecord:
    submitter: str
    request_id: str
    # SHA-256 of the submission's canonical JSON: the same request id with other content is refused.
    request_sha256: str
    message_id: UUID
    recorded_at: datetime


class SubmissionLedger:
    def __init__(self, *, state: SqliteState) -> None:
        self._state = state

    @classmethod
    def open(cls, path: Path) -> SubmissionLedger:
        return cls(state=SqliteState.open(path, name="submission ledger", schema=_SCHEMA))

    async def get(self, submitter: str, request_id: str) -> SubmissionRecord | None:
        rows = await self._state.query(
            "SELECT request_sha256, message_id, recorded_at FROM submissions WHERE submitter=? AND request_id=?",
            (submitter, request_id),
        )
        if not rows:
            return None
        request_sha256, message_id, recorded_at = rows[0]
        return SubmissionRecord(
            submitter=submitter,
            request_id=request_id,
            request_sha256=str(request_sha256),
            message_id=UUID(str(message_id)),
            recorded_at=datetime.fromisoformat(str(recorded_at)),
        )

    async def claim(
        self, submitter: str, request_id: str, *, request_sha256: str, message_id: UUID
    ) -> SubmissionRecord:
        """Record the request under `message_id` unless it is recorded already; the stored record."""
        await self._state.query(
            "INSERT OR IGNORE INTO submissions VALUES (?,?,?,?,?)",
            (submitter, request_id, request_sha256, str(message_id), datetime.now(UTC).isoformat()),
        )
        stored = await self.get(submitter, request_id)
        assert stored is not None  # just inserted or already there; rows are never deleted
        return stored

    async def move(self, submitter: str, request_id: str, *, message_id: UUID) -> None:
        """Point a request at a new message id: the one it had never reached the outbox."""
        await self._state.query(
            "UPDATE submissions SET message_id=? WHERE submitter=? AND request_id=?",
            (str(message_id), submitter, request_id),
        )

    def close(self) -> None:
        self._state.close()
