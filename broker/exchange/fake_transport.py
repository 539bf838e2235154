"""An in-memory transport with the broker behaviour gateways rely on, for fast unit tests.

It routes like RabbitMQ (direct, fanout, topic), refuses unroutable messages, dead-letters rejected
messages and messages past the delivery limit to the queue's dead-letter exchange, and settles each
delivery by the handler's `Disposition`. One instance stands for one vhost.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import structlog

from broker.core.errors import Reason, TransportError
from broker.exchange.topology import Declarations, ExchangeKind, subscriber_declarations, subscriber_queue
from broker.exchange.transport_api import NO_HEADERS, Disposition, Handler, HeaderValue, IncomingMessage

_log = structlog.get_logger(__name__)


@dataclass
class _Queue:
    name: str
    arguments: dict[str, str | int | bool]
    messages: deque[IncomingMessage] = field(default_factory=deque)
    consumers: list[FakeConsumer] = field(default_factory=list)
    next_consumer: int = 0


class FakeTransport:
    def __init__(self, *, name: str = "fake") -> None:
        self._name = name
        self._exchanges: dict[str, ExchangeKind] = {}
        self._queues: dict[str, _Queue] = {}
        self._bindings: set[tuple[str, str, str]] = set()
        self._closed = False
        self._deliveries: set[asyncio.Task[None]] = set()

    async def publish(
        self,
        *,
        exchange: str,
        routing_key: str,
        body: bytes,
        message_id: str,
        headers: Mapping[str, HeaderValue] = NO_HEADERS,
        timeout: float = 10.0,  # noqa: ASYNC109 - the confirm deadline is part of the publish contract
        mandatory: bool = True,
        correlation_id: str | None = None,
    ) -> None:
        self._ensure_open()
        message = IncomingMessage(
            body=bytes(body),
            message_id=message_id,
            routing_key=routing_key,
            exchange=exchange,
            headers=dict(headers),
            correlation_id=correlation_id,
        )
        if exchange not in self._exchanges:
            raise TransportError(Reason.TRANSPORT_UNROUTABLE, f"no exchange {exchange!r} in {self._name}")
        if not self._route(message) and mandatory:
            raise TransportError(
                Reason.TRANSPORT_UNROUTABLE, f"no queue bound to {exchange!r} with key {routing_key!r}"
            )
        _log.info("transport.published", connection=self._name, message_id=message_id, exchange=exchange,
                  routing_key=routing_key, size=len(body))  # fmt: skip

    async def consume(self, queue: str, handler: Handler, *, prefetch: int = 64) -> FakeConsumer:
        target = self._queue(queue)
        consumer = FakeConsumer(queue=queue, handler=handler, transport=self)
        target.consumers.append(consumer)
        self._dispatch(target)
        return consumer

    async def get(self, queue: str, *, remove: bool = True) -> IncomingMessage | None:
        target = self._queue(queue)
        if not target.messages:
            return None
        message = target.messages.popleft()
        if not remove:
            target.messages.appendleft(replace(message, delivery_count=message.delivery_count + 1))
        return message

    async def peek(self, queue: str, *, limit: int = 100) -> list[IncomingMessage]:
        return list(self._queue(queue).messages)[:limit]

    async def move(
        self, *, source_queue: str, message_id: str, exchange: str, routing_key: str, limit: int = 1000
    ) -> bool:
        target = self._queue(source_queue)
        found = next((m for m in list(target.messages)[:limit] if m.message_id == message_id), None)
        if found is None:
            return False
        await self.publish(
            exchange=exchange,
            routing_key=routing_key,
            body=found.body,
            message_id=message_id,
            headers=found.headers,
        )
        target.messages.remove(found)
        return True

    async def purge(self, queue: str) -> int:
        target = self._queue(queue)
        purged = len(target.messages)
        target.messages.clear()
        return purged

    @property
    def deliveries_in_flight(self) -> int:
        """Messages handed to a consumer whose handler has not returned yet."""
        return len(self._deliveries)

    async def queue_counts(self, queue: str) -> tuple[int, int]:
        target = self._queue(queue)
        return len(target.messages), len(target.consumers)

    async def declare(self, declarations: Declarations) -> None:
        self._ensure_open()
        for exchange in declarations.exchanges:
            if self._exchanges.setdefault(exchange.name, exchange.kind) is not exchange.kind:
                raise TransportError(
                    Reason.CONFIG_INVALID, f"exchange {exchange.name!r} exists with another type"
                )
        for queue in declarations.queues:
            existing = self._queues.setdefault(queue.name, _Queue(queue.name, queue.argument_map()))
            if existing.arguments != queue.argument_map():
                raise TransportError(
                    Reason.CONFIG_INVALID, f"queue {queue.name!r} exists with other arguments"
                )
        for binding in declarations.bindings:
            self._queue(binding.queue)
            if binding.exchange not in self._exchanges:
                raise TransportError(Reason.CONFIG_INVALID, f"no exchange {binding.exchange!r} to bind to")
            self._bindings.add((binding.exchange, binding.routing_key, binding.queue))

    async def declare_subscriber_queue(self, authority_id: str, binding_keys: Sequence[str]) -> str:
        await self.declare(subscriber_declarations(authority_id, binding_keys))
        return subscriber_queue(authority_id)

    async def close(self) -> None:
        self._closed = True
        for task in list(self._deliveries):
            task.cancel()
        await asyncio.gather(*self._deliveries, return_exceptions=True)

    # The broker's side.

    def _route(self, message: IncomingMessage) -> bool:
        kind = self._exchanges[message.exchange]
        targets = sorted(
            queue
            for exchange, key, queue in self._bindings
            if exchange == message.exchange and _matches(kind, key, message.routing_key)
        )
        for name in targets:
            target = self._queues[name]
            target.messages.append(message)
            self._dispatch(target)
        return bool(targets)

    def _dispatch(self, target: _Queue) -> None:
        if target.consumers and target.messages and not self._closed:
            task = asyncio.get_running_loop().create_task(self._deliver_one(target))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)

    async def _deliver_one(self, target: _Queue) -> None:
        if not target.consumers or not target.messages:
            return
        if target.arguments.get("x-single-active-consumer") is True:
            consumer = target.consumers[0]  # the first one registered, as RabbitMQ does
        else:
            consumer = target.consumers[target.next_consumer % len(target.consumers)]
            target.next_consumer += 1
        message = target.messages.popleft()
        disposition = await consumer.handle(message)
        if disposition is Disposition.REJECT:
            self._dead_letter(target, message, reason="rejected")
        elif disposition is Disposition.REQUEUE:
            returned = replace(message, redelivered=True, delivery_count=message.delivery_count + 1)
            limit = target.arguments.get("x-delivery-limit")
            if isinstance(limit, int) and returned.delivery_count > limit:
                self._dead_letter(target, returned, reason="delivery_limit")
            else:
                target.messages.append(returned)
        self._dispatch(target)

    def _dead_letter(self, target: _Queue, message: IncomingMessage, *, reason: str) -> None:
        exchange = target.arguments.get("x-dead-letter-exchange")
        if not isinstance(exchange, str) or exchange not in self._exchanges:
            return  # RabbitMQ drops it too when no dead-letter exchange is set
        dead = replace(message, exchange=exchange, redelivered=False, delivery_count=0, death_reason=reason)
        self._route(dead)

    def _queue(self, name: str) -> _Queue:
        self._ensure_open()
        try:
            return self._queues[name]
        except KeyError:
            raise TransportError(Reason.CONFIG_INVALID, f"no queue {name!r} in {self._name}") from None

    def _ensure_open(self) -> None:
        if self._closed:
            raise TransportError(Reason.TRANSPORT_UNAVAILABLE, f"transport {self._name} is closed")

    def _unsubscribe(self, consumer: FakeConsumer) -> None:
        target = self._queues.get(consumer.queue)
        if target and consumer in target.consumers:
            target.consumers.remove(consumer)


class FakeConsumer:
    def __init__(self, *, queue: str, handler: Handler, transport: FakeTransport) -> None:
        self._queue = queue
        self._handler = handler
        self._transport = transport

    @property
    def queue(self) -> str:
        return self._queue

    async def handle(self, message: IncomingMessage) -> Disposition:
        log = _log.bind(
            message_id=message.message_id, queue=self._queue, delivery_count=message.delivery_count
        )
        try:
            disposition = await self._handler(message)
        except Exception as exc:
            log.exception("transport.handler_crashed", reason=str(Reason.HANDLER_CRASHED), error=repr(exc))
            disposition = Disposition.REQUEUE
        log.info("transport.settled", disposition=str(disposition))
        return disposition

    async def cancel(self) -> None:
        self._transport._unsubscribe(self)


def _matches(kind: ExchangeKind, binding_key: str, routing_key: str) -> bool:
    if kind is ExchangeKind.FANOUT:
        return True
    if kind is ExchangeKind.DIRECT:
        return binding_key == routing_key
    return _topic_matches(binding_key.split("."), routing_key.split("."))


def _topic_matches(pattern: list[str], words: list[str]) -> bool:
    """AMQP topic matching: `*` is exactly one word, `#` is zero or more."""
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_topic_matches(rest, words[skip:]) for skip in range(len(words) + 1))
    if not words:
        return False
    return (head in ("*", words[0])) and _topic_matches(rest, words[1:])
