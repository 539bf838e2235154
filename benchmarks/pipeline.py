"""The signed pipeline: gateway send → shovel → verify, validate, audit, deliver, receipt → sender.

Both gateways run in this process, each assembled by `broker.gateway.gateway_from_settings` exactly
as `broker gateway` assembles it. When things happen is read from their log events (`events`).
"""

from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import dataclass, field

from benchmarks.common import Countdown, LoadShape, publish_all, throughput
from benchmarks.events import ACCEPTED, RECEIPTED, REJECTED, EventClock
from broker.catalogue import sample_payloads
from broker.devkit import DevExchange
from broker.gateway import Gateway, gateway_from_settings

MESSAGE_TYPE = "work_permit.cancellation"  # about 1 KiB of payload, like the baselines' bodies
SENDER = "TJ-MVD"
RECIPIENT = "RU-MVD"


@dataclass
class Link:
    sender: Gateway
    receiver: Gateway
    events: EventClock

    async def close(self) -> None:
        for gateway in (self.sender, self.receiver):
            await gateway.close()


async def start_link(dev: DevExchange, events: EventClock) -> Link:
    receiver = await gateway_from_settings(dev.settings["RU"])
    sender = await gateway_from_settings(dev.settings["TJ"])
    await receiver.start()
    await sender.start()
    return Link(sender=sender, receiver=receiver, events=events)


@dataclass(frozen=True, kw_only=True)
class PipelineThroughput:
    msgs_per_s: float
    cpu_s_per_1k: float
    peak_rss_mb: float


async def throughput_leg(link: Link, *, shape: LoadShape, timeout_s: float) -> PipelineThroughput:
    """First send to the last receipt recorded at the sender."""
    payload = sample_payloads()[MESSAGE_TYPE]
    receipts = Countdown(total=shape.messages)
    accepted_before = link.events.count(ACCEPTED)
    link.events.watchers[RECEIPTED].append(receipts)

    async def send_one(index: int) -> None:
        await link.sender.send(payload, to=RECIPIENT, sender=SENDER)

    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    await publish_all(shape.messages, in_flight=shape.in_flight, publish_one=send_one)
    await receipts.wait(timeout_s)
    cpu_used = _cpu_seconds() - cpu_before
    link.events.watchers[RECEIPTED].clear()
    await _check_complete(link, expected=accepted_before + shape.messages)
    return PipelineThroughput(
        msgs_per_s=throughput(shape.messages, started, receipts.finished_at),
        cpu_s_per_1k=cpu_used / shape.messages * 1000,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )


async def _check_complete(link: Link, *, expected: int) -> None:
    """Every message was accepted (none rejected) and its receipt closed the sender's outbox record."""
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

    async def send_one() -> None:
        started = time.perf_counter()
        result = await link.sender.send(
            payload, to=RECIPIENT, sender=SENDER, wait_receipt=True, receipt_timeout_s=timeout_s
        )
        sample.receipt_ms.append((time.perf_counter() - started) * 1000)
        audited = link.events.seen_at[ACCEPTED][str(result.message_id)]
        sample.audited_ms.append((audited - started) * 1000)

    tasks = []
    origin = time.perf_counter()
    for index in range(messages):
        delay = origin + index / rate_per_s - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send_one()))
    await asyncio.gather(*tasks)
    return sample


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
