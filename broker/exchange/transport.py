"""RabbitMQ through aio-pika: the only module that imports it.

Every aio-pika/aiormq exception is turned into a `TransportError` here, so nothing from the broker
library reaches a gateway loop. One transport talks to one vhost (one country's broker).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiormq.exceptions as amqp_errors
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from pamqp.commands import Basic

from broker.core.errors import Reason, TransportError
from broker.exchange.topology import Declarations, subscriber_declarations, subscriber_queue
from broker.exchange.transport_api import (
    BROKER_HEADERS,
    DEATH_HEADER,
    DELIVERY_COUNT_HEADER,
    NO_HEADERS,
    Disposition,
    Handler,
    HeaderValue,
    IncomingMessage,
)

_log = structlog.get_logger(__name__)


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
    async def connect(cls, *, url: str, name: str, operation_timeout: float = 10.0) -> RabbitTransport:
        """Connect (reconnecting later on its own) with `name` shown in the broker's connection list."""
        where = _without_credentials(url)
        try:
            connection = await aio_pika.connect_robust(
                url, client_properties={"connection_name": name}, timeout=operation_timeout
            )
        except Exception as exc:
            raise _connect_error(exc, where) from exc
        transport = cls(connection=connection, name=name, operation_timeout=operation_timeout)
        try:
            await transport._publishing_channel()
        except Exception as exc:
            await connection.close()
            raise _error(exc, f"opening a channel on {where}") from exc
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
    ) -> None:
        log = _log.bind(
            connection=self._name, message_id=message_id, exchange=exchange, routing_key=routing_key
        )
        message = aio_pika.Message(
            body,
            message_id=message_id,
            headers=dict(headers),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        action = f"publishing {message_id} to {exchange!r} with key {routing_key!r}"
        try:
            async with asyncio.timeout(timeout):
                channel = await self._publishing_channel()
                target = await channel.get_exchange(exchange, ensure=False)
                confirmation = await target.publish(message, routing_key=routing_key, mandatory=mandatory)
        except TimeoutError as exc:
            log.warning("transport.publish_failed", reason=str(Reason.TRANSPORT_NOT_CONFIRMED))
            raise TransportError(
                Reason.TRANSPORT_NOT_CONFIRMED, f"{action}: no broker confirm within {timeout} s"
            ) from exc
        except Exception as exc:
            error = _error(exc, action, missing=Reason.TRANSPORT_UNROUTABLE)
            log.warning("transport.publish_failed", reason=str(error.reason))
            raise error from exc
        if not isinstance(confirmation, Basic.Ack):
            log.warning("transport.publish_failed", reason=str(Reason.TRANSPORT_NOT_CONFIRMED))
            raise TransportError(Reason.TRANSPORT_NOT_CONFIRMED, f"{action}: the broker did not confirm it")
        log.info("transport.published", size=len(body))

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
            raise _error(exc, f"consuming from {queue!r}") from exc
        _log.info("transport.consuming", connection=self._name, queue=queue, prefetch=prefetch)
        return consumer

    async def get(self, queue: str, *, remove: bool = True) -> IncomingMessage | None:
        async with self._short_channel(f"getting a message from {queue!r}") as channel:
            amqp_queue = await channel.get_queue(queue, ensure=False)
            raw = await amqp_queue.get(no_ack=False, fail=False)
            if raw is None:
                return None
            if remove:
                await raw.ack()
            else:
                await raw.nack(requeue=True)
            return _incoming(raw)

    async def peek(self, queue: str, *, limit: int = 100) -> list[IncomingMessage]:
        """Take up to `limit` messages unacknowledged; closing the channel puts them all back."""
        messages: list[IncomingMessage] = []
        async with self._short_channel(f"listing {queue!r}") as channel:
            amqp_queue = await channel.get_queue(queue, ensure=False)
            while len(messages) < limit:
                raw = await amqp_queue.get(no_ack=False, fail=False)
                if raw is None:
                    break
                messages.append(_incoming(raw))
        return messages

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
                message = _incoming(raw)
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
            raise _error(exc, "closing the connection") from exc
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

    @asynccontextmanager
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
            raise _error(exc, action) from exc


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

    @property
    def queue(self) -> str:
        return self._queue

    async def on_message(self, raw: AbstractIncomingMessage) -> None:
        message = _incoming(raw)
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
            await self._channel.close()
        except Exception as exc:
            raise _error(exc, f"cancelling the consumer of {self._queue!r}") from exc
        _log.info("transport.consumer_cancelled", queue=self._queue)


def _incoming(raw: AbstractIncomingMessage) -> IncomingMessage:
    wire_headers = raw.headers or {}
    headers: dict[str, HeaderValue] = {}
    for key, value in wire_headers.items():
        if key in BROKER_HEADERS:
            continue
        if isinstance(value, str | int):
            headers[key] = value
        elif isinstance(value, bytes):
            headers[key] = value.decode("utf-8", errors="replace")
    count = wire_headers.get(DELIVERY_COUNT_HEADER, 0)
    return IncomingMessage(
        body=raw.body,
        message_id=raw.message_id,
        routing_key=raw.routing_key or "",
        exchange=raw.exchange or "",
        headers=headers,
        redelivered=bool(raw.redelivered),
        delivery_count=count if isinstance(count, int) else 0,
        death_reason=_death_reason(wire_headers.get(DEATH_HEADER)),
    )


def _death_reason(deaths: object) -> str | None:
    """The reason of the most recent dead-lettering, from the broker's `x-death` list."""
    if not isinstance(deaths, list) or not deaths or not isinstance(deaths[0], dict):
        return None
    reason = deaths[0].get("reason")
    if isinstance(reason, bytes):
        return reason.decode("ascii", errors="replace")
    return reason if isinstance(reason, str) else None


def _error(exc: BaseException, action: str, *, missing: Reason = Reason.CONFIG_INVALID) -> TransportError:
    """Map a broker library exception to our reason codes.

    `missing` is what a 404 means here: a publish to an absent exchange cannot be routed, while an
    absent queue means the topology was not applied.
    """
    detail = f"{action}: {exc!r}"
    # PublishError (a returned message) is a DeliveryError too: test it first.
    if isinstance(exc, amqp_errors.PublishError):
        return TransportError(Reason.TRANSPORT_UNROUTABLE, detail)
    if isinstance(exc, amqp_errors.ChannelNotFoundEntity):
        return TransportError(missing, detail)
    if isinstance(exc, amqp_errors.DeliveryError):
        return TransportError(Reason.TRANSPORT_NOT_CONFIRMED, detail)
    if isinstance(exc, amqp_errors.ChannelAccessRefused | amqp_errors.ProbableAuthenticationError):
        return TransportError(Reason.TRANSPORT_FORBIDDEN, detail)
    if isinstance(exc, amqp_errors.ChannelPreconditionFailed):
        return TransportError(Reason.CONFIG_INVALID, f"{detail} (declared before with other arguments?)")
    return TransportError(Reason.TRANSPORT_UNAVAILABLE, detail)


def _connect_error(exc: BaseException, where: str) -> TransportError:
    action = f"connecting to {where}"
    # RabbitMQ answers a login without access to the vhost by closing the connection during
    # Connection.Open, which aiormq reports as an unexpected frame.
    if isinstance(exc, amqp_errors.InvalidFrameError) and "Connection.Close" in str(exc):
        return TransportError(
            Reason.TRANSPORT_FORBIDDEN,
            f"{action}: the broker refused the vhost (no permission, or it does not exist)",
        )
    return _error(exc, action)


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
