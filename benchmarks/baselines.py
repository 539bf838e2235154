"""The two things users would build instead: raw aio-pika, and FastStream with a pydantic model.

Both carry 1 KiB persistent messages over exactly the pipeline's path (sender `outbound` → shovel →
receiver `inbound`) with publisher confirms and manual acks after the handler, and no signing,
validation beyond pydantic's, audit or receipts.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aio_pika
from pydantic import BaseModel

from benchmarks.common import (
    BODY_BYTES,
    INBOUND_QUEUE,
    OUTBOUND_EXCHANGE,
    PEER_ROUTING_KEY,
    Countdown,
    LinkUrls,
    LoadShape,
    offer_at_rate,
    publish_all,
    throughput,
)


async def raw_leg(*, urls: LinkUrls, shape: LoadShape, timeout_s: float) -> float:
    """Messages per second, first publish to last ack at the receiver."""
    body = b"x" * BODY_BYTES
    async with _raw_link(urls, prefetch=shape.prefetch) as (exchange, queue):
        countdown = Countdown(total=shape.messages)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            countdown.tick()

        tag = await queue.consume(on_message, no_ack=False)

        async def publish_one(index: int) -> None:
            message = aio_pika.Message(
                body, message_id=str(index), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
            )
            await exchange.publish(message, routing_key=PEER_ROUTING_KEY)

        started = time.monotonic()
        await publish_all(shape.messages, in_flight=shape.in_flight, publish_one=publish_one)
        await countdown.wait(timeout_s)
        await queue.cancel(tag)
        return throughput(shape.messages, started, countdown.finished_at)


async def raw_latency_leg(
    *, urls: LinkUrls, messages: int, rate_per_s: float, prefetch: int, timeout_s: float
) -> list[float]:
    """Milliseconds from publish to the receiver's handler, raw aio-pika at an offered rate: the
    path's own latency (broker, confirms, shovel hop), to read the pipeline's latency against."""
    body = b"x" * BODY_BYTES
    async with _raw_link(urls, prefetch=prefetch) as (exchange, queue):
        started: dict[str, float] = {}
        latencies: list[float] = []
        countdown = Countdown(total=messages)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            latencies.append((time.monotonic() - started[str(message.message_id)]) * 1000)
            await message.ack()
            countdown.tick()

        tag = await queue.consume(on_message, no_ack=False)

        async def publish_one(index: int) -> None:
            started[str(index)] = time.monotonic()
            message = aio_pika.Message(
                body, message_id=str(index), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
            )
            await exchange.publish(message, routing_key=PEER_ROUTING_KEY)

        await offer_at_rate(messages, rate_per_s=rate_per_s, start_one=publish_one)
        await countdown.wait(timeout_s)
        await queue.cancel(tag)
        return latencies


@contextlib.asynccontextmanager
async def _raw_link(
    urls: LinkUrls, *, prefetch: int
) -> AsyncIterator[tuple[aio_pika.abc.AbstractExchange, aio_pika.abc.AbstractQueue]]:
    """The sender's `outbound` exchange (publisher confirms on) and the receiver's `inbound` queue."""
    sender = await aio_pika.connect(urls.sender)
    receiver = await aio_pika.connect(urls.receiver)
    try:
        publish_channel = await sender.channel(publisher_confirms=True)
        exchange = await publish_channel.get_exchange(OUTBOUND_EXCHANGE, ensure=False)
        consume_channel = await receiver.channel()
        await consume_channel.set_qos(prefetch_count=prefetch)
        yield exchange, await consume_channel.declare_queue(INBOUND_QUEUE, passive=True)
    finally:
        await sender.close()
        await receiver.close()


class WorkerNotice(BaseModel):
    """An unsigned notice of the size the raw leg sends, for the FastStream leg."""

    message_id: uuid.UUID
    message_type: str
    sender: str
    recipient: str
    created_at: datetime
    text: str


def sized_notice() -> WorkerNotice:
    notice = WorkerNotice(
        message_id=uuid.uuid4(),
        message_type="work_permit.cancellation",
        sender="TJ-MVD",
        recipient="RU-MVD",
        created_at=datetime.now(UTC),
        text="",
    )
    padding = BODY_BYTES - len(notice.model_dump_json())
    return notice.model_copy(update={"text": "x" * max(padding, 0)})


async def faststream_leg(*, urls: LinkUrls, shape: LoadShape, timeout_s: float) -> float:
    """Messages per second through FastStream publishers and a subscriber that acks after handling."""
    from faststream import AckPolicy  # noqa: PLC0415 - a benchmark-only extra
    from faststream.rabbit import Channel, QueueType, RabbitBroker, RabbitExchange, RabbitQueue  # noqa: PLC0415

    countdown = Countdown(total=shape.messages)
    publisher = RabbitBroker(urls.sender, logger=None)
    subscriber = RabbitBroker(urls.receiver, logger=None)
    queue = RabbitQueue(INBOUND_QUEUE, queue_type=QueueType.QUORUM, declare=False)

    @subscriber.subscriber(queue, channel=Channel(prefetch_count=shape.prefetch), ack_policy=AckPolicy.ACK)
    async def handle(notice: WorkerNotice) -> None:
        countdown.tick()

    exchange = RabbitExchange(OUTBOUND_EXCHANGE, declare=False)
    template = sized_notice()
    await subscriber.start()
    await publisher.connect()
    try:

        async def publish_one(index: int) -> None:
            notice = template.model_copy(update={"message_id": uuid.uuid4()})
            await publisher.publish(notice, exchange=exchange, routing_key=PEER_ROUTING_KEY, persist=True)

        started = time.monotonic()
        await publish_all(shape.messages, in_flight=shape.in_flight, publish_one=publish_one)
        await countdown.wait(timeout_s)
        return throughput(shape.messages, started, countdown.finished_at)
    finally:
        await publisher.stop()
        await subscriber.stop()


def faststream_installed() -> bool:
    try:
        import faststream.rabbit  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True
