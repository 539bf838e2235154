"""The floor the design sets, priced in the same run: primitives' costs times the pipeline's counts.

At the start of a run each primitive the design needs is timed alone (process CPU per operation):
Ed25519 sign and verify over an envelope-sized input, an HPKE seal and open of a data key, and
aio-pika's confirmed publish and consume-with-ack of an envelope-sized body over the benchmark's own
path. During the pipeline's throughput leg both gateway processes count how often they perform each
one (`OperationCounter`, installed before the gateway starts; the receiving gateway reports its
counts over its pipe). `floor_ms_per_msg` is the sum of cost x count over both gateways, per message:
what the two processes would spend if every line of our own code cost nothing.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

import broker.core.jws
import broker.core.personal
from benchmarks.common import INBOUND_QUEUE, OUTBOUND_EXCHANGE, PEER_ROUTING_KEY, LinkUrls, publish_all
from broker.exchange.transport import RabbitTransport

ENVELOPE_BYTES = 2900  # a work_permit.cancellation as it travels: JWS, x5c and sealed payload
OPERATIONS = ("sign", "verify", "seal", "open", "publish", "consume")
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)


def _cpu() -> float:
    return time.process_time()


def _per_op_us(operation: Callable[[], object], count: int) -> float:
    started = _cpu()
    for _ in range(count):
        operation()
    return (_cpu() - started) / count * 1e6


def crypto_costs_us(count: int = 2000) -> dict[str, float]:
    """Microseconds of CPU per Ed25519 sign/verify and HPKE seal/open, each timed alone."""
    message = secrets.token_bytes(ENVELOPE_BYTES)
    signing_key = Ed25519PrivateKey.generate()
    signature = signing_key.sign(message)
    public_key = signing_key.public_key()
    holder = X25519PrivateKey.generate()
    data_key = secrets.token_bytes(32)
    info = b"labour-exchange dek v1\nbenchmark"
    sealed = _SUITE.encrypt(data_key, holder.public_key(), info=info)
    return {
        "sign": _per_op_us(lambda: signing_key.sign(message), count),
        "verify": _per_op_us(lambda: public_key.verify(signature, message), count),
        "seal": _per_op_us(lambda: _SUITE.encrypt(data_key, holder.public_key(), info=info), count),
        "open": _per_op_us(lambda: _SUITE.decrypt(sealed, holder, info=info), count),
    }


async def broker_costs_us(*, urls: LinkUrls, count: int, in_flight: int, prefetch: int) -> dict[str, float]:
    """Microseconds of client CPU per confirmed publish and per consume with ack, over the path."""
    body = secrets.token_bytes(ENVELOPE_BYTES)
    sender = await aio_pika.connect(urls.sender)
    receiver = await aio_pika.connect(urls.receiver)
    try:
        channel = await sender.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(OUTBOUND_EXCHANGE, ensure=False)

        async def publish_one(index: int) -> None:
            message = aio_pika.Message(
                body, message_id=str(index), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
            )
            await exchange.publish(message, routing_key=PEER_ROUTING_KEY)

        started = _cpu()
        await publish_all(count, in_flight=in_flight, publish_one=publish_one)
        publish_us = (_cpu() - started) / count * 1e6

        consume_channel = await receiver.channel()
        await consume_channel.set_qos(prefetch_count=prefetch)
        queue = await consume_channel.declare_queue(INBOUND_QUEUE, passive=True)
        while True:  # the shovel may still be carrying them over
            declared = await consume_channel.declare_queue(INBOUND_QUEUE, passive=True)
            if (declared.declaration_result.message_count or 0) >= count:
                break
            await asyncio.sleep(0.05)
        started = _cpu()
        async with queue.iterator() as messages:
            seen = 0
            async for message in messages:
                await message.ack()
                seen += 1
                if seen == count:
                    break
        consume_us = (_cpu() - started) / count * 1e6
    finally:
        await sender.close()
        await receiver.close()
    return {"publish": publish_us, "consume": consume_us}


class OperationCounter:
    """Counts, in this process, each primitive the gateway performs: signatures and verifications
    (every module's `sign_detached`/`verify_detached`), HPKE seals and opens (the personal-data
    suite), confirmed publishes and consumed deliveries (the RabbitMQ transport)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def install(self) -> None:
        self._wrap_everywhere(broker.core.jws.sign_detached, "sign")
        self._wrap_everywhere(broker.core.jws.verify_detached, "verify")
        broker.core.personal._SUITE = _CountingSuite(broker.core.personal._SUITE, self.counts)  # type: ignore[assignment]
        publish, consume = RabbitTransport.publish, RabbitTransport.consume
        counts = self.counts

        async def counted_publish(transport: RabbitTransport, **kwargs: Any) -> None:
            counts["publish"] += 1
            await publish(transport, **kwargs)

        async def counted_consume(transport: RabbitTransport, queue: str, handler: Any, **kwargs: Any) -> Any:
            async def counted_handler(incoming: Any) -> Any:
                counts["consume"] += 1
                return await handler(incoming)

            return await consume(transport, queue, counted_handler, **kwargs)

        RabbitTransport.publish = counted_publish  # type: ignore[method-assign,assignment]
        RabbitTransport.consume = counted_consume  # type: ignore[method-assign,assignment]

    def _wrap_everywhere(self, function: Callable[..., Any], name: str) -> None:
        counts = self.counts

        def counted(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return function(*args, **kwargs)

        for module in list(sys.modules.values()):
            if (
                getattr(module, "__name__", "").startswith("broker.")
                and getattr(module, function.__name__, None) is function
            ):
                setattr(module, function.__name__, counted)

    def snapshot(self) -> dict[str, int]:
        return {operation: self.counts[operation] for operation in OPERATIONS}


class _CountingSuite:
    def __init__(self, suite: Any, counts: Counter[str]) -> None:
        self._suite = suite
        self._counts = counts

    def encrypt(self, *args: Any, **kwargs: Any) -> bytes:
        self._counts["seal"] += 1
        return bytes(self._suite.encrypt(*args, **kwargs))

    def decrypt(self, *args: Any, **kwargs: Any) -> bytes:
        self._counts["open"] += 1
        return bytes(self._suite.decrypt(*args, **kwargs))


@dataclass(frozen=True, kw_only=True)
class Floor:
    ms_per_msg: float
    counts_per_msg: dict[str, float]


def price(costs_us: dict[str, float], counts: dict[str, int], messages: int) -> Floor:
    """The floor per message: each primitive's cost times how often both gateways performed it."""
    per_msg = {operation: counts.get(operation, 0) / messages for operation in OPERATIONS}
    return Floor(
        ms_per_msg=sum(costs_us[operation] * per_msg[operation] for operation in OPERATIONS) / 1000,
        counts_per_msg=per_msg,
    )


def diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {operation: after.get(operation, 0) - before.get(operation, 0) for operation in OPERATIONS}
