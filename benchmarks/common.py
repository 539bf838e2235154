"""What every leg of the benchmark shares: the path, the message size, and how load is offered."""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


async def offer_at_rate(
    count: int, *, rate_per_s: float, start_one: Callable[[int], Coroutine[Any, Any, None]]
) -> None:
    """Open loop: the index-th call starts at index / rate seconds, whether or not earlier ones are done."""
    tasks: list[asyncio.Task[None]] = []
    origin = time.monotonic()
    for index in range(count):
        delay = origin + index / rate_per_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(start_one(index)))
    await asyncio.gather(*tasks)


def throughput(messages: int, started: float, finished: float) -> float:
    return messages / max(finished - started, 1e-9)


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of another process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _listening_socket_inodes(port: int) -> set[str]:
    """Inodes of the sockets listening on `port` (IPv4 and IPv6), from /proc/net."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(fields[9])
    return inodes


def broker_pid(port: int = 5672) -> int | None:
    """The RabbitMQ node (Erlang VM) listening on `port` on this machine; None when none does.

    Only that node counts: another node starting or stopping nearby (the chaos suite's, another
    test run's) must not move the figure.
    """
    wanted = {f"socket:[{inode}]" for inode in _listening_socket_inodes(port)}
    if not wanted:
        return None
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() != "beam.smp":
                continue
            for fd in (comm.parent / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    return int(comm.parent.name)
        except (OSError, ValueError):
            continue  # the process ended while we looked
    return None


def broker_cpu_seconds(pid: int | None) -> float | None:
    """CPU used so far by the broker process `pid`; None when there is none or it has gone."""
    if pid is None:
        return None
    try:
        return process_cpu_seconds(pid)
    except (OSError, ValueError):
        return None


@dataclass
class CpuMeter:
    """CPU seconds per 1,000 messages of one leg: this process, a peer process, and the broker."""

    peer_pid: int | None = None

    def __post_init__(self) -> None:
        self._own = own_cpu_seconds()
        self._peer = process_cpu_seconds(self.peer_pid) if self.peer_pid else 0.0
        self._broker_pid = broker_pid()
        self._broker = broker_cpu_seconds(self._broker_pid)

    def per_1k(self, messages: int) -> tuple[float, float, float | None]:
        scale = 1000 / messages
        own = (own_cpu_seconds() - self._own) * scale
        peer = ((process_cpu_seconds(self.peer_pid) - self._peer) * scale) if self.peer_pid else 0.0
        now = broker_cpu_seconds(self._broker_pid)
        broker = None if now is None or self._broker is None else (now - self._broker) * scale
        return own, peer, broker
