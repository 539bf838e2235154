"""The shape every transport has: the real RabbitMQ one and the in-memory one used in unit tests.

No broker library is imported here, so gateways and their tests depend on this module only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Protocol

from broker.exchange.topology import Declarations

HeaderValue = str | int
NO_HEADERS: Mapping[str, HeaderValue] = MappingProxyType({})

# Headers the broker adds on its own; kept out of `IncomingMessage.headers` so that what a
# publisher sent is what a consumer sees.
DELIVERY_COUNT_HEADER = "x-delivery-count"
DEATH_HEADER = "x-death"
BROKER_HEADERS = frozenset({DELIVERY_COUNT_HEADER, DEATH_HEADER, "x-first-death-exchange",
                            "x-first-death-queue", "x-first-death-reason", "x-last-death-exchange",
                            "x-last-death-queue", "x-last-death-reason"})  # fmt: skip


class Disposition(StrEnum):
    """What a consumer decided about one message."""

    ACK = "ack"  # done and durable (e.g. the audit entry committed)
    REJECT = "reject"  # dead-letter to quarantine, never redeliver
    REQUEUE = "requeue"  # try again later (counts toward the delivery limit)


@dataclass(frozen=True)
class IncomingMessage:
    body: bytes
    message_id: str | None
    routing_key: str
    exchange: str
    headers: Mapping[str, HeaderValue] = field(default_factory=dict)
    redelivered: bool = False
    # How many earlier deliveries of this message were not acknowledged.
    delivery_count: int = 0
    # Why the broker dead-lettered it ("rejected", "delivery_limit", ...), for quarantine listings.
    death_reason: str | None = None
    # The publisher's RabbitMQ user, when it set the property: the broker refuses any other value.
    user_id: str | None = None
    # Where and under which id a request wants its answer (direct reply-to).
    reply_to: str | None = None
    correlation_id: str | None = None


Handler = Callable[[IncomingMessage], Awaitable[Disposition]]


class ConsumerHandle(Protocol):
    @property
    def queue(self) -> str: ...

    async def cancel(self) -> None: ...


class Transport(Protocol):
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
        """Return once the broker confirmed the persistent message; raise TransportError otherwise.

        With `mandatory` (the default) a message no queue takes is an error (transport.unroutable).
        An answer to a request goes to exchange "" with its `reply_to` as routing key, not mandatory
        (RabbitMQ 3.10 returns mandatory messages to a direct reply-to address even when delivered).
        """
        ...

    async def consume(self, queue: str, handler: Handler, *, prefetch: int = 64) -> ConsumerHandle:
        """Deliver each message to `handler`; a handler that raises has its message requeued."""
        ...

    async def get(self, queue: str, *, remove: bool = True) -> IncomingMessage | None:
        """Fetch one message; `remove=False` puts it back."""
        ...

    async def peek(self, queue: str, *, limit: int = 100) -> list[IncomingMessage]:
        """Up to `limit` messages from the head of the queue, all left in place."""
        ...

    async def move(
        self, *, source_queue: str, message_id: str, exchange: str, routing_key: str, limit: int = 1000
    ) -> bool:
        """Republish the message with `message_id` (among the first `limit`), then remove it.

        Published before removed, so a crash in between duplicates rather than loses it. False when
        the message is not there.
        """
        ...

    async def purge(self, queue: str) -> int: ...

    async def queue_counts(self, queue: str) -> tuple[int, int]:
        """(messages ready, consumers)."""
        ...

    async def declare(self, declarations: Declarations) -> None: ...

    async def declare_subscriber_queue(self, authority_id: str, binding_keys: Sequence[str]) -> str: ...

    async def close(self) -> None: ...
