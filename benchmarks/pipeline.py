"""The signed pipeline: gateway send → shovel → verify, validate, audit, deliver, receipt → sender.

The sending gateway runs in this process and the receiving one in a process of its own
(`benchmarks.peer`), as two countries' gateways run; each is assembled by
`broker.exchange.gateway.gateway_from_settings` exactly as `broker gateway` assembles it. When things happen
is read from their log events (`events`; the peer reports its own over a pipe).
"""

from __future__ import annotations

import asyncio
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import (
    Countdown,
    CpuMeter,
    LoadShape,
    offer_at_rate,
    publish_all,
    throughput,
)
from benchmarks.events import ACCEPTED, RECEIPTED, REJECTED, EventClock
from benchmarks.floor import OperationCounter, diff
from broker.core.catalogue import sample_payloads
from broker.exchange import runtime
from broker.exchange.devkit import DevExchange
from broker.exchange.gateway import Gateway, gateway_from_settings
from broker.state.settings import ExchangeSettings

MESSAGE_TYPE = "work_permit.cancellation"  # about 1 KiB of payload, like the baselines' bodies
SENDER = "TJ-MVD"
RECIPIENT = "RU-MVD"


class PeerProcess:
    """The receiving gateway's process: its events go into `events`; its memory is read from /proc
    (its CPU by `CpuMeter`, from its `pid`)."""

    def __init__(self, process: asyncio.subprocess.Process, events: EventClock) -> None:
        self._process = process
        self._events = events
        self._reader: asyncio.Task[None] | None = None
        self.counts: dict[str, int] = {}  # the primitives it performed, as it last reported them

    @classmethod
    async def start(cls, config: Path, events: EventClock) -> PeerProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.peer", str(config),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        peer = cls(process, events)
        assert process.stdout is not None
        first = await asyncio.wait_for(process.stdout.readline(), 120)
        if first.strip() != b"ready":
            await peer.close()
            raise RuntimeError(f"the receiving gateway did not start (said {first!r})")
        peer._reader = asyncio.create_task(peer._read_events())
        return peer

    async def _read_events(self) -> None:
        assert self._process.stdout is not None
        async for line in self._process.stdout:
            kind, *fields = line.decode().split()
            if kind == "event":
                name, message_id, at = fields
                self._events.saw(name, message_id, float(at))
            elif kind == "counts":
                self.counts = {name: int(count) for name, count in (field.split("=") for field in fields)}

    @property
    def pid(self) -> int:
        return self._process.pid

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self._process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    async def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            await asyncio.wait_for(self._process.wait(), 30)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()
        if self._reader is not None:
            await self._reader


@dataclass
class Link:
    sender: Gateway
    receiver: PeerProcess
    events: EventClock
    counter: OperationCounter

    async def close(self) -> None:
        await self.sender.close()
        await self.receiver.close()


async def start_link(dev: DevExchange, events: EventClock) -> Link:
    return await start_link_from(dev.settings, events)


async def start_link_from(settings: dict[str, ExchangeSettings], events: EventClock) -> Link:
    receiver = await PeerProcess.start(settings["RU"].country_state_dir / "gateway.toml", events)
    counter = OperationCounter()
    counter.install()  # before the gateway starts: its consumer is counted too
    sender = await gateway_from_settings(settings["TJ"])
    await sender.start()
    runtime.tune_for_long_run()  # as `broker gateway` does once started
    return Link(sender=sender, receiver=receiver, events=events, counter=counter)


@dataclass(frozen=True, kw_only=True)
class PipelineThroughput:
    msgs_per_s: float
    cpu_s_per_1k: float  # both gateways
    sender_cpu_s_per_1k: float
    receiver_cpu_s_per_1k: float
    broker_cpu_s_per_1k: float | None
    peak_rss_mb: float
    operations: dict[str, int]  # primitives both gateways performed during the leg


async def throughput_leg(link: Link, *, shape: LoadShape, timeout_s: float) -> PipelineThroughput:
    """First send to the last receipt recorded at the sender."""
    payload = sample_payloads()[MESSAGE_TYPE]
    receipts = Countdown(total=shape.messages)
    accepted_before = link.events.count(ACCEPTED)
    link.events.watchers[RECEIPTED].append(receipts)

    async def send_one(index: int) -> None:
        await link.sender.send(payload, to=RECIPIENT, sender=SENDER)

    meter = CpuMeter(peer_pid=link.receiver.pid)
    own_before, peer_before = link.counter.snapshot(), dict(link.receiver.counts)
    started = time.monotonic()
    await publish_all(shape.messages, in_flight=shape.in_flight, publish_one=send_one)
    await receipts.wait(timeout_s)
    sender_cpu, receiver_cpu, broker_cpu = meter.per_1k(shape.messages)
    await asyncio.sleep(0.2)  # the peer reports its counts every 50 ms
    own, peer = diff(link.counter.snapshot(), own_before), diff(link.receiver.counts, peer_before)
    link.events.watchers[RECEIPTED].clear()
    await _check_complete(link, expected=accepted_before + shape.messages)
    return PipelineThroughput(
        msgs_per_s=throughput(shape.messages, started, receipts.finished_at),
        cpu_s_per_1k=sender_cpu + receiver_cpu,
        sender_cpu_s_per_1k=sender_cpu,
        receiver_cpu_s_per_1k=receiver_cpu,
        broker_cpu_s_per_1k=broker_cpu,
        peak_rss_mb=max(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, link.receiver.peak_rss_mb()
        ),
        operations={operation: own[operation] + peer[operation] for operation in own},
    )


async def _check_complete(link: Link, *, expected: int) -> None:
    """Every message was accepted (none rejected) and its receipt closed the sender's outbox record."""
    for _ in range(100):
        if link.events.count(ACCEPTED) >= expected:  # the peer's events may still be in the pipe
            break
        await asyncio.sleep(0.05)
    rejected = link.events.count(REJECTED)
    accepted = link.events.count(ACCEPTED)
    if rejected or accepted < expected:
        raise RuntimeError(f"pipeline leg incomplete: {accepted} accepted, {rejected} rejected")
    for _ in range(100):
        if await link.sender.outbox.outstanding_count() == 0:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("receipts were recorded but the sender's outbox still has open records")


@dataclass(frozen=True, kw_only=True)
class LatencySample:
    audited_ms: list[float] = field(default_factory=list)
    receipt_ms: list[float] = field(default_factory=list)


async def latency_leg(link: Link, *, messages: int, rate_per_s: float, timeout_s: float) -> LatencySample:
    """Offer `rate_per_s` sends (open loop: the schedule does not wait for slow sends)."""
    payload = sample_payloads()[MESSAGE_TYPE]
    sample = LatencySample()

    started_at: dict[str, float] = {}

    async def send_one(index: int) -> None:
        started = time.monotonic()
        result = await link.sender.send(
            payload, to=RECIPIENT, sender=SENDER, wait_receipt=True, receipt_timeout_s=timeout_s
        )
        sample.receipt_ms.append((time.monotonic() - started) * 1000)
        started_at[str(result.message_id)] = started

    await offer_at_rate(messages, rate_per_s=rate_per_s, start_one=send_one)
    accepted = link.events.seen_at[ACCEPTED]
    for _ in range(100):  # the receiving process's last events may still be in the pipe
        if all(message_id in accepted for message_id in started_at):
            break
        await asyncio.sleep(0.05)
    sample.audited_ms.extend(
        (accepted[message_id] - started) * 1000 for message_id, started in started_at.items()
    )
    return sample
