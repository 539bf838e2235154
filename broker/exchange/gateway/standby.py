"""Active or standby: which of a country's gateway processes may consume, send and write the log.

A gateway becomes active by taking the audit log's writer lock (`broker.audit.stores.writer_lock`)
before it opens a consumer or writes anything; until then it is a standby that tries the lock every
`standby_poll_s` and says so in its log and on `/readyz`. The active one checks at the same pace that
it still holds the lock; if it does not, it stops consuming and the process exits, to come back as a
standby. The queues' single active consumer (`topology`) is the broker's own guard on top.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from enum import StrEnum

import structlog

from broker.audit.stores.writer_lock import LOCK_FILE, FileWriterLock, WriterLock
from broker.core.errors import AuditError, ConfigError, Reason
from broker.exchange.health import Check, Readiness
from broker.state.settings import ExchangeSettings

_log = structlog.get_logger(__name__)


class Role(StrEnum):
    STANDBY = "standby"
    ACTIVE = "active"


def writer_lock_for(settings: ExchangeSettings) -> WriterLock:
    """The lock beside the log the settings name: a PostgreSQL advisory lock, or a file beside SQLite."""
    if settings.audit_backend == "postgres":
        if not settings.audit_dsn:
            raise ConfigError(Reason.CONFIG_INVALID, "audit_backend=postgres needs audit_dsn")
        from broker.audit.stores.postgres_lock import PostgresWriterLock  # noqa: PLC0415 - optional driver

        return PostgresWriterLock.for_schema(
            settings.audit_dsn,
            schema=f"audit_{settings.country.lower()}",
            plaintext_hosts=tuple(settings.plaintext_hosts),
        )
    return FileWriterLock(settings.country_state_dir / LOCK_FILE)


class ActiveRole:
    """This process's role, the lock that decides it, and the watch that notices losing it."""

    def __init__(self, *, lock: WriterLock, poll_s: float, country: str) -> None:
        self.lock = lock
        self._poll_s = poll_s
        self._country = country
        self.role = Role.STANDBY
        self.holder: str | None = None
        self.lost = asyncio.Event()
        self._watch: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: ExchangeSettings) -> ActiveRole:
        return cls(lock=writer_lock_for(settings), poll_s=settings.standby_poll_s, country=settings.country)

    async def wait_until_active(self, stop: asyncio.Event | None = None) -> bool:
        """Take the lock, waiting as a standby while another process holds it; False if `stop` came
        first. A lock that cannot be tried at all (database down) is retried, and logged."""
        if self.role is Role.ACTIVE:
            return True
        told: tuple[str, str | None] | None = None
        while True:
            try:
                if await self.lock.try_acquire():
                    self.role, self.holder = Role.ACTIVE, None
                    _log.info("gateway.active", country=self._country, lock=self.lock.where)
                    return True
                self.holder = await self.lock.holder()
                seen: tuple[str, str | None] = ("held", self.holder)
            except AuditError as error:
                self.holder = None
                seen = ("unavailable", str(error))
            if seen != told:  # one line per change, not one per attempt
                _log.warning(
                    "gateway.standby",
                    country=self._country,
                    lock=self.lock.where,
                    holder=self.holder,
                    problem=seen[1] if seen[0] == "unavailable" else None,
                )
                told = seen
            if stop is None:
                await asyncio.sleep(self._poll_s)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_s):
                    await stop.wait()
            if stop.is_set():
                return False

    def watch(self, on_lost: Callable[[], object]) -> None:
        """While active, check the lock every `poll_s`; on loss call (and await) `on_lost`, then set
        `lost`."""
        self._watch = asyncio.get_running_loop().create_task(self._watching(on_lost), name="writer-lock")

    async def _watching(self, on_lost: Callable[[], object]) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                await self.lock.check_held()
            except AuditError as error:
                self.role = Role.STANDBY
                _log.error(
                    "gateway.writer_lost", country=self._country, reason=str(error.reason), error=str(error)
                )
                result = on_lost()
                if asyncio.iscoroutine(result):
                    await result
                self.lost.set()  # after on_lost: whoever waits for it finds the gateway stopped
                return

    async def release(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        await self.lock.release()
        self.role = Role.STANDBY

    def readiness(self) -> Readiness:
        """A standby's `/readyz`: not ready (it serves nothing), saying whose turn it is."""
        holder = self.holder or "another gateway (holder unknown)"
        return Readiness(
            {"writer_lock": Check(False, f"standby: {self.lock.where} is held by {holder}")},
            role=str(self.role),
        )

    def with_lock(self, readiness: Readiness) -> Readiness:
        """The active gateway's checks with the lock it holds and its role added."""
        held = Check(True, f"held: {self.lock.where}")
        return Readiness({**readiness.checks, "writer_lock": held}, role=str(self.role))
