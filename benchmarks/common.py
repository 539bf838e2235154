"""What every leg of the benchmark shares: the path, the message size, and how load is offered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

# Every leg publishes into the sender's `outbound` exchange with the peer's routing key; the
# shovel carries the message to the peer's `inbound` queue, where it is consumed.
OUTBOUND_EXCHANGE = "outbound"
PEER_ROUTING_KEY = "ru"
INBOUND_QUEUE = "inbound"
BODY_BYTES = 1024


@dataclass(frozen=True, kw_only=True)
class LinkUrls:
    """AMQP URLs of the sending (tj) and receiving (ru) vhosts, as each country's gateway user."""

    sender: str
    receiver: str


@dataclass(frozen=True, kw_only=True)
class LoadShape:
    messages: int
    in_flight: int  # publishes awaiting their broker confirm at once, the same for every leg
    prefetch: int  # unacknowledged deliveries per consumer, the same for every leg


async def publish_all(count: int, *, in_flight: int, publish_one: Callable[[int], Awaitable[None]]) -> None:
    """Publish `count` messages with at most `in_flight` outstanding (each awaits its confirm)."""
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            index = next_index
            next_index += 1
            await publish_one(index)

    await asyncio.gather(*(worker() for _ in range(min(in_flight, count))))


class Countdown:
    """Set when `total` completions have been counted; remembers when that happened."""

    def __init__(self, *, total: int) -> None:
        self._remaining = total
        self._done = asyncio.Event()
        self.finished_at = 0.0
        if total <= 0:
            self._finish()

    def tick(self) -> None:
        self._remaining -= 1
        if self._remaining == 0:
            self._finish()

    def _finish(self) -> None:
        self.finished_at = time.monotonic()
        self._done.set()

    async def wait(self, timeout_s: float) -> None:
        await asyncio.wait_for(self._done.wait(), timeout_s)


def throughput(messages: int, started: float, finished: float) -> float:
    return messages / max(finished - started, 1e-9)
