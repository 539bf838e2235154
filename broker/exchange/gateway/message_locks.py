"""One lock per message id while any copy of it is handled, so copies are taken in one at a time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from uuid import UUID


class PerMessageLocks:
    """One lock per message id, kept while any copy of that message is being handled.

    Copies of one message (broker redeliveries, a peer's re-send) are handled one at a time, so the
    duplicate check always sees the audit entries the previous copy wrote.
    """

    def __init__(self) -> None:
        self._locks: dict[UUID, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, message_id: UUID) -> AsyncIterator[None]:
        lock, holders = self._locks.get(message_id, (asyncio.Lock(), 0))
        self._locks[message_id] = (lock, holders + 1)
        try:
            async with lock:
                yield
        finally:
            lock, holders = self._locks[message_id]
            if holders == 1:
                del self._locks[message_id]
            else:
                self._locks[message_id] = (lock, holders - 1)

    def __len__(self) -> int:
        return len(self._locks)
