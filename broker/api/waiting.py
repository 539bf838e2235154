"""Long polls for "the receipt arrived": a caller waits on its message instead of polling us.

Woken at once when the receipt comes back to a submission this API made (the gateway's answer on
the submission channel), and otherwise by one loop that reads the states of every awaited message
from the outbox in one query (a message submitted by `broker send`, or before a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
from uuid import UUID

from broker.core.errors import ExchangeError
from broker.exchange.submission import ReceiptNews
from broker.state.outbox import OutboxReader, SendState

SETTLED = frozenset({SendState.RECEIPTED, SendState.REJECTED})
POLL_S = 0.5


class ReceiptWaiters:
    def __init__(self, outbox: OutboxReader, *, poll_s: float = POLL_S) -> None:
        self._outbox = outbox
        self._poll_s = poll_s
        self._waiting: dict[UUID, asyncio.Event] = {}
        self._users: dict[UUID, int] = {}
        self._loop: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = asyncio.create_task(self._watch(), name="api-receipt-waiters")

    async def close(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop

    def notify(self, news: ReceiptNews) -> None:
        """A receipt came back on the submission channel (a final one ends the wait)."""
        event = self._waiting.get(news.message_id)
        if event is not None and news.final:
            event.set()

    async def wait(self, message_id: UUID, *, timeout_s: float) -> None:
        """Return when the message's receipt is in, or after `timeout_s`."""
        event = self._waiting.setdefault(message_id, asyncio.Event())
        self._users[message_id] = self._users.get(message_id, 0) + 1
        try:
            async with asyncio.timeout(timeout_s):
                await event.wait()
        except TimeoutError:
            pass
        finally:
            self._users[message_id] -= 1
            if not self._users[message_id]:
                del self._users[message_id]
                del self._waiting[message_id]

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            awaited = [m for m, event in self._waiting.items() if not event.is_set()]
            if not awaited:
                continue
            try:
                states = await self._outbox.states(awaited)
            except ExchangeError:
                continue  # the outbox could not be read this time; the next round tries again
            for message_id, state in states.items():
                if state in SETTLED and message_id in self._waiting:
                    self._waiting[message_id].set()
