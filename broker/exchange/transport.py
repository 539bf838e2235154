"""RabbitMQ through aio-pika: with `amqp_wire`, the only modules that import it.

Every aio-pika/aiormq exception is turned into a `TransportError` (`amqp_wire.transport_error`), so
nothing from the broker library reaches a gateway loop. One transport talks to one vhost (one
country's broker).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection

from broker.core.errors import Reason, TransportError
from broker.exchange.amqp_wire import (
    confirmed_publish,
    connect_any,
    connect_error,
    incoming_message,
    refuses_get,
    take_by_consuming,
    transport_error,
    without_credentials,
)
from broker.exchange.topology import Declarations, subscriber_declarations, subscriber_queue
from broker.exchange.transport_api import NO_HEADERS, Disposition, Handler, HeaderValue, IncomingMessage

_log = structlog.get_logger(__name__)

# RabbitMQ's pseudo-queue for answers to the requests a channel publishes.
REPLY_TO = "amq.rabbitmq.reply-to"
# How long a stopping consumer waits for the messages in its handlers to settle before it closes.
DRAIN_TIMEOUT_S = 10.0


class RabbitTransport:
    def __init__(
        self,
        *,
        connection: AbstractRobustConnection,
        name: str,
        operation_timeout: float = 10.0,
    ) -> None:
        self._connection = connection
        self._name = name
        self._operation_timeout = operation_timeout
        self._publish_channel: AbstractChannel | None = None
        self._publish_channel_lock = asyncio.Lock()

    @classmethod
    async def connect(
        cls, *, url: str, name: str, operation_timeout: float = 10.0, failover: Sequence[str] = ()
    ) -> RabbitTransport:
        """Connect (reconnecting later on its own) with `name` shown in the broker's connection list.

        `failover`: the same URL on the cluster's other nodes; each reconnection tries the next node.
        """
        where = without_credentials(url)
        try:
            connection = await connect_any([url, *failover], name=name, timeout_s=operation_timeout)
        except Exception as exc:
            raise connect_error(exc, where) from exc
        where = without_credentials(str(connection))  # the node that answered
        transport = cls(connection=connection, name=name, operation_timeout=operation_timeout)
        try:
            await transport._publishing_channel()
        except Exception as exc:
            await connection.close()
            raise transport_error(exc, f"opening a channel on {where}") from exc
        _log.info("transport.connected", connection=name, broker=where)
        return transport

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
        message = aio_pika.Message(
            body,
            message_id=message_id,
            headers=dict(headers),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            correlation_id=correlation_id,
        )
        await confirmed_publish(
            self._publishing_channel,
            message,
            exchange=exchange,
            routing_key=routing_key,
            timeout=timeout,
            mandatory=mandatory,
            log=_log.bind(
                connection=self._name, message_id=message_id, exchange=exchange, routing_key=routing_key
            ),
        )

    async def requests(self) -> RabbitRequests:
        """A channel that publishes requests and receives their answers (RabbitMQ direct reply-to)."""
        try:
            async with asyncio.timeout(self._operation_timeout):
                await self._connection.ready()
                channel = aio_pika.Channel(self._connection, publisher_confirms=True, on_return_raises=True)
                await channel.initialize()
                requests = RabbitRequests(channel=channel, name=self._name)
                # Consuming first: RabbitMQ refuses a publish naming the reply-to address before it.
                replies = await channel.get_queue(REPLY_TO, ensure=False)
                await replies.consume(requests.on_reply, no_ack=True)
        except Exception as exc:
            raise transport_error(exc, "opening a request channel") from exc
        return requests

    async def consume(self, queue: str, handler: Handler, *, prefetch: int = 64) -> RabbitConsumer:
        try:
            async with asyncio.timeout(self._operation_timeout):
                # A robust channel of its own: prefetch is per consumer and consumers come back after
                # a reconnect.
                channel = await self._connection.channel(publisher_confirms=False)
                await channel.set_qos(prefetch_count=prefetch)
                amqp_queue = await channel.declare_queue(queue, passive=True)
                consumer = RabbitConsumer(
                    queue=queue, channel=channel, amqp_queue=amqp_queue, handler=handler
                )
                consumer.tag = await amqp_queue.consume(consumer.on_message, no_ack=False)
        except Exception as exc:
            raise transport_error(exc, f"consuming from {queue!r}") from exc
        _log.info("transport.consuming", connection=self._name, queue=queue, prefetch=prefetch)
        return consumer

    async def get(self, queue: str, *, remove: bool = True) -> IncomingMessage | None:
        taken = await self._take(queue, limit=1, settle=Disposition.ACK if remove else Disposition.REQUEUE)
        return taken[0] if taken else None

    async def peek(self, queue: str, *, limit: int = 100) -> list[IncomingMessage]:
        """Take up to `limit` messages unacknowledged; closing the channel puts them all back."""
        return await self._take(queue, limit=limit, settle=None)

    async def _take(self, queue: str, *, limit: int, settle: Disposition | None) -> list[IncomingMessage]:
        """Up to `limit` messages by basic.get, or by a short consumer where the queue refuses that
        (single active consumer); each acked or requeued as `settle` says, or left to the channel's
        close (which puts them back)."""
        action = f"taking up to {limit} message(s) from {queue!r}"
        taken: list[AbstractIncomingMessage] = []
        async with self._short_channel(action) as channel:
            amqp_queue = await channel.get_queue(queue, ensure=False)
            try:
                while len(taken) < limit:
                    raw = await amqp_queue.get(no_ack=False, fail=False)
                    if raw is None:
                        break
                    taken.append(raw)
            except Exception as exc:
                if not refuses_get(exc):
                    raise
            else:
                return await _settled(taken, settle)
        # The broker closed that channel refusing basic.get: read through a consumer instead.
        async with self._short_channel(action) as channel:
            wait_s = self._operation_timeout / 2
            return await _settled(await take_by_consuming(channel, queue, limit=limit, wait_s=wait_s), settle)

    async def move(
        self, *, source_queue: str, message_id: str, exchange: str, routing_key: str, limit: int = 1000
    ) -> bool:
        # Messages taken but not moved go back when the short channel closes.
        async with self._short_channel(f"moving {message_id} out of {source_queue!r}") as channel:
            amqp_queue = await channel.get_queue(source_queue, ensure=False)
            for _ in range(limit):
                raw = await amqp_queue.get(no_ack=False, fail=False)
                if raw is None:
                    break
                if raw.message_id != message_id:
                    continue
                message = incoming_message(raw)
                await self.publish(
                    exchange=exchange,
                    routing_key=routing_key,
                    body=message.body,
                    message_id=message_id,
                    headers=message.headers,
                )
                await raw.ack()
                _log.info(
                    "transport.moved", connection=self._name, message_id=message_id, source=source_queue
                )
                return True
        return False

    async def purge(self, queue: str) -> int:
        async with self._short_channel(f"purging {queue!r}") as channel:
            amqp_queue = await channel.get_queue(queue, ensure=False)
            result = await amqp_queue.purge()
        purged = int(result.message_count or 0)
        _log.info("transport.purged", connection=self._name, queue=queue, messages=purged)
        return purged

    async def queue_counts(self, queue: str) -> tuple[int, int]:
        async with self._short_channel(f"counting {queue!r}") as channel:
            amqp_queue = await channel.declare_queue(queue, passive=True)
        declared = amqp_queue.declaration_result
        return int(declared.message_count or 0), int(declared.consumer_count or 0)

    async def declare(self, declarations: Declarations) -> None:
        async with self._short_channel("declaring the topology") as channel:
            for exchange in declarations.exchanges:
                await channel.declare_exchange(exchange.name, exchange.kind.value, durable=True)
            for queue in declarations.queues:
                await channel.declare_queue(queue.name, durable=True, arguments=dict(queue.arguments))
            for binding in declarations.bindings:
                bound = await channel.get_queue(binding.queue, ensure=False)
                await bound.bind(binding.exchange, routing_key=binding.routing_key)
        _log.info(
            "transport.declared",
            connection=self._name,
            exchanges=[exchange.name for exchange in declarations.exchanges],
            queues=[queue.name for queue in declarations.queues],
        )

    async def declare_subscriber_queue(self, authority_id: str, binding_keys: Sequence[str]) -> str:
        await self.declare(subscriber_declarations(authority_id, binding_keys))
        return subscriber_queue(authority_id)

    async def close(self) -> None:
        try:
            await self._connection.close()
        except Exception as exc:
            raise transport_error(exc, "closing the connection") from exc
        _log.info(connection=self._name, event="transport.closed")

    async def _publishing_channel(self) -> AbstractChannel:
        """The confirming channel publishes share, opened again after the broker closed it (a 404
        or 403 closes the channel, not the connection) or after a reconnect."""
        async with self._publish_channel_lock:
            if self._publish_channel is None or self._publish_channel.is_closed:
                await self._connection.ready()
                # on_return_raises turns a mandatory message that no queue took into an exception.
                channel = aio_pika.Channel(self._connection, publisher_confirms=True, on_return_raises=True)
                await channel.initialize()
                self._publish_channel = channel
            return self._publish_channel

    @contextlib.asynccontextmanager
    async def _short_channel(self, action: str) -> AsyncIterator[AbstractChannel]:
        """A plain channel for one administrative step.

        Not a robust one: a broker error (404, 403, 406) closes it, and it must stay closed rather
        than be reopened behind our back.
        """
        channel = aio_pika.Channel(self._connection, publisher_confirms=False)
        try:
            async with asyncio.timeout(self._operation_timeout):
                await self._connection.ready()
                await channel.initialize()
                try:
                    yield channel
                finally:
                    if not channel.is_closed:
                        await channel.close()
        except TransportError:
            raise
        except Exception as exc:
            raise transport_error(exc, action) from exc


async def _settled(taken: list[AbstractIncomingMessage], settle: Disposition | None) -> list[IncomingMessage]:
    for raw in taken:
        if settle is Disposition.ACK:
            await raw.ack()
        elif settle is Disposition.REQUEUE:
            await raw.nack(requeue=True)
    return [incoming_message(raw) for raw in taken]


class RabbitRequests:
    """Requests published with `reply_to` set to this channel's direct reply-to address; answers
    arrive on the same channel and wait in `answers` until read. Closing the channel ends them."""

    def __init__(self, *, channel: AbstractChannel, name: str) -> None:
        self._channel = channel
        self._name = name
        self.answers: asyncio.Queue[IncomingMessage] = asyncio.Queue()

    async def on_reply(self, raw: AbstractIncomingMessage) -> None:
        self.answers.put_nowait(incoming_message(raw))

    async def publish(
        self,
        *,
        exchange: str,
        routing_key: str,
        body: bytes,
        message_id: str,
        correlation_id: str,
        user_id: str | None,
        expiration_s: float | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109 - the confirm deadline is part of the publish contract
    ) -> None:
        """Publish a request, confirmed and mandatory; `user_id` must be this connection's user.

        `expiration_s`: the broker drops the request if no consumer took it by then.
        """

        async def channel() -> AbstractChannel:
            return self._channel

        message = aio_pika.Message(
            body,
            message_id=message_id,
            correlation_id=correlation_id,
            reply_to=REPLY_TO,
            user_id=user_id,
            expiration=expiration_s,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        log = _log.bind(connection=self._name, message_id=message_id, exchange=exchange)
        await confirmed_publish(
            channel,
            message,
            exchange=exchange,
            routing_key=routing_key,
            timeout=timeout,
            mandatory=True,
            log=log,
        )

    async def close(self) -> None:
        if not self._channel.is_closed:
            await self._channel.close()


class RabbitConsumer:
    """A running consumer; `cancel()` stops it and closes its channel."""

    def __init__(
        self,
        *,
        queue: str,
        channel: aio_pika.abc.AbstractRobustChannel,
        amqp_queue: AbstractQueue,
        handler: Handler,
    ) -> None:
        self._queue = queue
        self._channel = channel
        self._amqp_queue = amqp_queue
        self._handler = handler
        self.tag: str | None = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def queue(self) -> str:
        return self._queue

    async def on_message(self, raw: AbstractIncomingMessage) -> None:
        self._in_flight += 1
        self._idle.clear()
        try:
            await self._settle(raw)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _settle(self, raw: AbstractIncomingMessage) -> None:
        message = incoming_message(raw)
        log = _log.bind(
            message_id=message.message_id, queue=self._queue, delivery_count=message.delivery_count
        )
        try:
            disposition = await self._handler(message)
        except Exception as exc:
            # Requeue: the broker's delivery limit dead-letters a message that always crashes us.
            log.exception("transport.handler_crashed", reason=str(Reason.HANDLER_CRASHED), error=repr(exc))
            disposition = Disposition.REQUEUE
        try:
            if disposition is Disposition.ACK:
                await raw.ack()
            elif disposition is Disposition.REJECT:
                await raw.reject(requeue=False)
            else:
                await raw.nack(requeue=True)
        except Exception as exc:
            # The channel is gone: the broker redelivers the message, nothing is lost.
            log.warning("transport.settle_failed", disposition=str(disposition), error=repr(exc))
            return
        log.info("transport.settled", disposition=str(disposition))

    async def cancel(self) -> None:
        try:
            if self.tag is not None and not self._channel.is_closed:
                await self._amqp_queue.cancel(self.tag)
                # Let the messages being handled settle: one audited but not yet acked would be
                # redelivered to the next start (answered as a duplicate, but a needless round).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._idle.wait(), DRAIN_TIMEOUT_S)
            await self._channel.close()
        except Exception as exc:
            raise transport_error(exc, f"cancelling the consumer of {self._queue!r}") from exc
        _log.info("transport.consumer_cancelled", queue=self._queue)
