"""Between aio-pika and our types: a confirmed publish, incoming messages, and library errors as reason codes.

Part of the RabbitMQ transport (`transport` is the only other module that imports aio-pika): every
aio-pika/aiormq exception is turned into a `TransportError` here, so nothing from the broker library
reaches a gateway loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiormq.exceptions as amqp_errors
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from pamqp.commands import Basic
from pamqp.common import FieldTable
from yarl import URL

from broker.core.errors import Reason, TransportError
from broker.exchange.transport_api import (
    BROKER_HEADERS,
    DEATH_HEADER,
    DELIVERY_COUNT_HEADER,
    HeaderValue,
    IncomingMessage,
)


async def confirmed_publish(
    channel_of: Callable[[], Awaitable[AbstractChannel]],
    message: aio_pika.Message,
    *,
    exchange: str,
    routing_key: str,
    timeout: float,  # noqa: ASYNC109 - the confirm deadline is part of the publish contract
    mandatory: bool,
    log: Any,
) -> None:
    action = f"publishing {message.message_id} to {exchange!r} with key {routing_key!r}"
    try:
        async with asyncio.timeout(timeout):
            channel = await channel_of()
            target = await channel.get_exchange(exchange, ensure=False)
            confirmation = await target.publish(message, routing_key=routing_key, mandatory=mandatory)
    except TimeoutError as exc:
        log.warning("transport.publish_failed", reason=str(Reason.TRANSPORT_NOT_CONFIRMED))
        raise TransportError(
            Reason.TRANSPORT_NOT_CONFIRMED, f"{action}: no broker confirm within {timeout} s"
        ) from exc
    except Exception as exc:
        error = transport_error(exc, action, missing=Reason.TRANSPORT_UNROUTABLE)
        log.warning("transport.publish_failed", reason=str(error.reason))
        raise error from exc
    if not isinstance(confirmation, Basic.Ack):
        log.warning("transport.publish_failed", reason=str(Reason.TRANSPORT_NOT_CONFIRMED))
        raise TransportError(Reason.TRANSPORT_NOT_CONFIRMED, f"{action}: the broker did not confirm it")
    log.info("transport.published", size=len(message.body))


def incoming_message(raw: AbstractIncomingMessage) -> IncomingMessage:
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
        death_reason=death_reason(wire_headers.get(DEATH_HEADER)),
        user_id=raw.user_id,
        reply_to=raw.reply_to,
        correlation_id=raw.correlation_id,
    )


def death_reason(deaths: object) -> str | None:
    """The reason of the most recent dead-lettering, from the broker's `x-death` list."""
    if not isinstance(deaths, list) or not deaths or not isinstance(deaths[0], dict):
        return None
    reason = deaths[0].get("reason")
    if isinstance(reason, bytes):
        return reason.decode("ascii", errors="replace")
    return reason if isinstance(reason, str) else None


def transport_error(
    exc: BaseException, action: str, *, missing: Reason = Reason.CONFIG_INVALID
) -> TransportError:
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
    if isinstance(exc, amqp_errors.ChannelPreconditionFailed) and "user_id" in str(exc):
        # RabbitMQ refuses a user_id property that is not the connection's own user.
        return TransportError(Reason.TRANSPORT_FORBIDDEN, detail)
    if isinstance(exc, amqp_errors.ChannelPreconditionFailed):
        return TransportError(Reason.CONFIG_INVALID, f"{detail} (declared before with other arguments?)")
    return TransportError(Reason.TRANSPORT_UNAVAILABLE, detail)


def connect_error(exc: BaseException, where: str) -> TransportError:
    action = f"connecting to {where}"
    # RabbitMQ answers a login without access to the vhost by closing the connection during
    # Connection.Open, which aiormq reports as an unexpected frame.
    if isinstance(exc, amqp_errors.InvalidFrameError) and "Connection.Close" in str(exc):
        return TransportError(
            Reason.TRANSPORT_FORBIDDEN,
            f"{action}: the broker refused the vhost (no permission, or it does not exist)",
        )
    return transport_error(exc, action)


def without_credentials(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def refuses_get(exc: BaseException) -> bool:
    """RabbitMQ refuses basic.get on a quorum queue with a single active consumer (RESOURCE_LOCKED)."""
    return isinstance(exc, amqp_errors.ChannelLockedResource)


async def take_by_consuming(
    channel: AbstractChannel, queue: str, *, limit: int, wait_s: float
) -> list[AbstractIncomingMessage]:
    """Up to `limit` of the messages waiting in `queue`, unacknowledged, through a short consumer:
    how an operator's tool reads a queue that refuses basic.get (`inbound` and `submit` have a single
    active consumer). Waits at most `wait_s`; while a gateway is the active consumer, gets nothing."""
    amqp_queue = await channel.declare_queue(queue, passive=True)
    wanted = min(limit, int(amqp_queue.declaration_result.message_count or 0))
    taken: list[AbstractIncomingMessage] = []
    if wanted == 0:
        return taken
    enough = asyncio.Event()

    async def take(raw: AbstractIncomingMessage) -> None:
        taken.append(raw)
        if len(taken) >= wanted:
            enough.set()

    await channel.set_qos(prefetch_count=wanted)
    tag = await amqp_queue.consume(take, no_ack=False)
    try:
        async with asyncio.timeout(wait_s):
            await enough.wait()
    except TimeoutError:
        pass  # what came is what there is
    await amqp_queue.cancel(tag)
    return taken[:wanted]


class FailoverConnection(aio_pika.RobustConnection):
    """A robust connection that tries the next node of the cluster on every (re)connection.

    aio-pika reconnects to the URL it was given; a cluster node that is gone would be retried until
    it returns. Here `url` names the next node each time it is read while no transport is up: aio-pika
    reads it exactly once per connection attempt (`Connection.connect`). `str()` names the node in use.
    """

    def __init__(self, url: Any, *, failover: tuple[str, ...] = (), **kwargs: Any) -> None:
        self._nodes = [URL(url), *(URL(other) for other in failover)]
        self._attempt = 0
        self._in_use = self._nodes[0]
        super().__init__(url, **kwargs)
        self._attempt = 0  # reading the URL's query while initialising was no attempt

    @property
    def url(self) -> URL:
        if self.transport is not None:
            return self._in_use
        self._in_use = self._nodes[self._attempt % len(self._nodes)]
        self._attempt += 1
        return self._in_use

    @url.setter
    def url(self, value: URL) -> None:
        # Set by aio-pika at init and on a secret update: keep every node's credentials alike.
        self._nodes = [node.with_user(value.user or "").with_password(value.password) for node in self._nodes]
        self._in_use = self._in_use.with_user(value.user or "").with_password(value.password)

    def __str__(self) -> str:
        return str(self._in_use.with_password("******") if self._in_use.password else self._in_use)


async def connect_any(urls: list[str], *, name: str, timeout_s: float) -> AbstractRobustConnection:
    """The first node of `urls` that answers; the connection then tries the others in turn on
    every reconnection (`FailoverConnection`). One URL: aio-pika's own robust connection."""
    properties: FieldTable = {"connection_name": name}
    if len(urls) == 1:
        return await aio_pika.connect_robust(urls[0], client_properties=properties, timeout=timeout_s)
    failure: Exception | None = None
    for first in range(len(urls)):
        order = urls[first:] + urls[:first]
        connection = FailoverConnection(order[0], failover=tuple(order[1:]), client_properties=properties)
        try:
            await connection.connect(timeout=timeout_s)
        except Exception as exc:  # this node is down: the next one
            failure = exc
            await connection.close()
            continue
        return connection
    if failure is None:
        raise ValueError("no broker URL to connect to")
    raise failure
