"""The audit log's writer lock: the one gateway process of a country that may write its log holds it.

Two gateways of one country may run at once (a standby beside the active one), but the log, the
outbox and the per-message duplicate checks assume one writer. Whoever holds this lock is active;
the others wait (docs/reliability.md, "Two gateways per country").

- SQLite (one host): `flock` on `<state dir>/gateway.lock`. The kernel releases it when the holder's
  process dies, however it dies; the holder writes who it is into the file for the standby to show.
- PostgreSQL (`postgres_lock`, its own module so SQLite sites never load the driver): a session
  advisory lock on a connection of its own. The server releases it when that
  session ends (process killed, host gone, network cut past TCP keep-alive). Every audit write checks,
  inside its transaction, that this session still holds it (`fence`), so a process that lost the
  lock without noticing cannot append after another took over.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from broker.core.errors import AuditError, Reason

LOCK_FILE = "gateway.lock"


def holder_name() -> str:
    """How this process is named to the others: host and process id."""
    return f"{socket.gethostname()} pid {os.getpid()}"


class WriterLock(Protocol):
    @property
    def where(self) -> str:
        """The lock, as an operator finds it (a file path, a PostgreSQL schema)."""
        ...

    async def try_acquire(self) -> bool:
        """Take the lock if it is free; True if this process holds it now. Never waits."""
        ...

    async def holder(self) -> str | None:
        """Who holds it (host and pid) if that can be read, else None."""
        ...

    async def check_held(self) -> None:
        """Raise AuditError `audit.writer_lost` unless this process still holds the lock."""
        ...

    async def release(self) -> None: ...


class FileWriterLock:
    """`flock` on one file in the country's state folder: for gateways sharing one host's disk."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    @property
    def where(self) -> str:
        return str(self._path)

    async def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        # Held: say who holds it, for the standby's log line and /readyz.
        record = {"holder": holder_name(), "since": datetime.now(UTC).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return True

    async def holder(self) -> str | None:
        try:
            record = json.loads(self._path.read_bytes())
        except (OSError, ValueError):
            return None
        return f"{record.get('holder')} since {record.get('since')}" if isinstance(record, dict) else None

    async def check_held(self) -> None:
        if self._fd is None:
            raise AuditError(Reason.AUDIT_WRITER_LOST, f"the writer lock {self._path} is not held")
        # A lock file removed or replaced under us would let another process lock a new file.
        try:
            same = os.stat(self._path).st_ino == os.fstat(self._fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            raise AuditError(
                Reason.AUDIT_WRITER_LOST,
                f"the writer lock file {self._path} was removed or replaced while this gateway held it",
            )

    async def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
