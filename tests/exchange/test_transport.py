"""The transport contract, run against the in-memory FakeTransport and the real RabbitMQ alike.

A gateway's unit tests use the fake; this module keeps the fake honest by holding both to the same
behaviour. The RabbitMQ half runs in the tj vhost of the session's test link.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from broker.core.errors import Reason, TransportError
from broker.exchange.fake_transport import FakeTransport
from broker.exchange.topology import DELIVERY_LIMIT, Declarations, vhost_declarations
from broker.exchange.transport import RabbitTransport
from broker.exchange.transport_api import Disposition, IncomingMessage, Transport

if TYPE_CHECKING:
    from tests.support.rabbit import RabbitLink


OWN_COUNTRY = "tj"


@pytest_asyncio.fixture(params=["fake", pytest.param("rabbit", marks=pytest.mark.rabbitmq)])
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[Transport]:
    chosen: Transport
    if request.param == "fake":
        fake = FakeTransport(name="fake-tj")
        await fake.declare(vhost_declarations(OWN_COUNTRY, ["ru"]))
        chosen = fake
    else:
        link: RabbitLink = request.getfixturevalue("rabbit_link")
        chosen = await RabbitTransport.connect(
            url=link.gateway_url(link.tj), name=f"test-{request.node.name}"
        )
    await chosen.purge("inbound")
    await chosen.purge("quarantine")
    yield chosen
    await chosen.close()


async def eventually(check: Callable[[], Awaitable[bool]], *, seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not await check():  # noqa: ASYNC110 - polls the broker, which sends no event
            await asyncio.sleep(0.05)


def new_id() -> str:
    return str(uuid.uuid4())


class TestTransportBehaviour:
    async def test_published_message_arrives_intact(self, transport: Transport) -> None:
        message_id = new_id()
        headers: dict[str, str | int] = {"type": "worker.death", "schema": 1}

        await transport.publish(
            exchange="inbound",
            routing_key=OWN_COUNTRY,
            body=b"\x00signed",
            message_id=message_id,
            headers=headers,
        )

        assert await transport.queue_counts("inbound") == (1, 0)
        received = await transport.get("inbound")
        assert received is not None
        assert (received.body, received.message_id, dict(received.headers)) == (
            b"\x00signed",
            message_id,
            headers,
        )
        assert (received.exchange, received.routing_key, received.delivery_count) == (
            "inbound",
            OWN_COUNTRY,
            0,
        )
        assert await transport.get("inbound") is None

    async def test_unroutable_key_raises(self, transport: Transport) -> None:
        with pytest.raises(TransportError) as caught:
            await transport.publish(exchange="outbound", routing_key="zz", body=b"x", message_id=new_id())
        assert caught.value.reason is Reason.TRANSPORT_UNROUTABLE

    async def test_missing_exchange_raises_unroutable_and_transport_stays_usable(
        self, transport: Transport
    ) -> None:
        with pytest.raises(TransportError) as caught:
            await transport.publish(exchange="outbound.zz", routing_key="tj", body=b"x", message_id=new_id())
        assert caught.value.reason is Reason.TRANSPORT_UNROUTABLE

        await transport.publish(
            exchange="inbound", routing_key=OWN_COUNTRY, body=b"after", message_id=new_id()
        )
        assert await transport.queue_counts("inbound") == (1, 0)

    async def test_ack_removes_the_message(self, transport: Transport) -> None:
        handled: list[IncomingMessage] = []

        async def handler(message: IncomingMessage) -> Disposition:
            handled.append(message)
            return Disposition.ACK

        consumer = await transport.consume("inbound", handler)
        await transport.publish(exchange="inbound", routing_key=OWN_COUNTRY, body=b"ok", message_id=new_id())
        await eventually(lambda: _done(handled))
        await consumer.cancel()

        assert await transport.queue_counts("inbound") == (0, 0)
        assert await transport.queue_counts("quarantine") == (0, 0)

    async def test_rejected_message_lands_in_quarantine(self, transport: Transport) -> None:
        message_id = new_id()

        async def handler(message: IncomingMessage) -> Disposition:
            return Disposition.REJECT

        consumer = await transport.consume("inbound", handler)
        await transport.publish(
            exchange="inbound",
            routing_key=OWN_COUNTRY,
            body=b"bad",
            message_id=message_id,
            headers={"k": "v"},
        )
        await eventually(lambda: _has_messages(transport, "quarantine"))
        await consumer.cancel()

        quarantined = await transport.get("quarantine")
        assert quarantined is not None
        assert (quarantined.message_id, quarantined.body, dict(quarantined.headers)) == (
            message_id,
            b"bad",
            {"k": "v"},
        )
        assert quarantined.death_reason == "rejected"
        assert await transport.queue_counts("inbound") == (0, 0)

    async def test_crashing_handler_requeues_until_the_delivery_limit(self, transport: Transport) -> None:
        delivery_counts: list[int] = []

        async def handler(message: IncomingMessage) -> Disposition:
            delivery_counts.append(message.delivery_count)
            raise RuntimeError("poison")

        with capture_logs() as events:
            consumer = await transport.consume("inbound", handler)
            await transport.publish(
                exchange="inbound", routing_key=OWN_COUNTRY, body=b"poison", message_id=new_id()
            )
            await eventually(lambda: _has_messages(transport, "quarantine"))
            await consumer.cancel()

        assert delivery_counts == list(range(DELIVERY_LIMIT + 1))
        quarantined = await transport.get("quarantine")
        assert quarantined is not None
        assert quarantined.death_reason == "delivery_limit"
        crashes = [e for e in events if e["event"] == "transport.handler_crashed"]
        assert len(crashes) == DELIVERY_LIMIT + 1
        assert all(e["reason"] == "handler.crashed" for e in crashes)

    async def test_requeued_message_comes_back_counted(self, transport: Transport) -> None:
        seen: list[IncomingMessage] = []

        async def handler(message: IncomingMessage) -> Disposition:
            seen.append(message)
            return Disposition.REQUEUE if len(seen) == 1 else Disposition.ACK

        consumer = await transport.consume("inbound", handler)
        await transport.publish(
            exchange="inbound", routing_key=OWN_COUNTRY, body=b"again", message_id=new_id()
        )
        await eventually(lambda: _done(seen, count=2))
        await consumer.cancel()

        assert [(m.redelivered, m.delivery_count) for m in seen] == [(False, 0), (True, 1)]
        assert seen[0].message_id == seen[1].message_id
        assert await transport.queue_counts("inbound") == (0, 0)

    async def test_subscriber_queues_route_by_type_and_citizenship(self, transport: Transport) -> None:
        suffix = uuid.uuid4().hex[:8].upper()
        consulate = await transport.declare_subscriber_queue(f"TJ-CONSULATE-{suffix}", ["worker.death.TJ"])
        ministry = await transport.declare_subscriber_queue(
            f"TJ-MOL-{suffix}", ["work_permit.cancellation.*"]
        )
        assert consulate == f"sub.TJ-CONSULATE-{suffix}"

        await transport.publish(
            exchange="delivery", routing_key="worker.death.TJ", body=b"d", message_id=new_id()
        )
        await transport.publish(
            exchange="delivery", routing_key="work_permit.cancellation.-", body=b"c", message_id=new_id()
        )
        # Another national's death notice is not the consulate's (in the shared test vhost a
        # ministry queue of `topology apply` may take it, so it need not be unroutable here).
        with contextlib.suppress(TransportError):
            await transport.publish(
                exchange="delivery", routing_key="worker.death.UZ", body=b"u", message_id=new_id()
            )
        # A key no queue binds is refused, not dropped.
        with pytest.raises(TransportError) as caught:
            await transport.publish(
                exchange="delivery",
                routing_key=f"no_such.type{suffix.lower()}.-",
                body=b"u",
                message_id=new_id(),
            )

        assert caught.value.reason is Reason.TRANSPORT_UNROUTABLE
        assert await transport.queue_counts(consulate) == (1, 0)
        assert await transport.queue_counts(ministry) == (1, 0)
        # Declaring again with the same keys changes nothing.
        await transport.declare_subscriber_queue(f"TJ-CONSULATE-{suffix}", ["worker.death.TJ"])
        assert await transport.queue_counts(consulate) == (1, 0)

    async def test_peek_and_get_without_remove_leave_messages_and_purge_empties(
        self, transport: Transport
    ) -> None:
        ids = [new_id() for _ in range(3)]
        for message_id in ids:
            await transport.publish(exchange="quarantine", routing_key="", body=b"q", message_id=message_id)

        assert sorted(m.message_id or "" for m in await transport.peek("quarantine")) == sorted(ids)
        assert len(await transport.peek("quarantine", limit=2)) == 2
        kept = await transport.get("quarantine", remove=False)
        assert kept is not None
        assert kept.message_id in ids

        async def all_three_back() -> bool:
            # A quorum queue takes back a requeued or released message asynchronously.
            return await transport.queue_counts("quarantine") == (3, 0)

        await eventually(all_three_back)
        assert await transport.purge("quarantine") == 3
        assert await transport.queue_counts("quarantine") == (0, 0)

    async def test_redeclaring_is_a_no_op_and_other_arguments_a_config_error(
        self, transport: Transport
    ) -> None:
        await transport.declare(vhost_declarations(OWN_COUNTRY, ["ru"]))

        with pytest.raises(TransportError) as caught:
            await transport.declare(_inbound_without_delivery_limit())
        assert caught.value.reason is Reason.CONFIG_INVALID

    async def test_move_republishes_one_message_and_leaves_the_others(self, transport: Transport) -> None:
        wanted, other = new_id(), new_id()
        for message_id in (other, wanted):
            await transport.publish(
                exchange="quarantine",
                routing_key="",
                body=message_id.encode(),
                message_id=message_id,
                headers={"x-reason": "r"},
            )

        moved = await transport.move(
            source_queue="quarantine", message_id=wanted, exchange="inbound", routing_key=OWN_COUNTRY
        )

        assert moved
        assert [m.message_id for m in await transport.peek("quarantine")] == [other]
        back = await transport.get("inbound")
        assert back is not None
        assert (back.message_id, back.body, dict(back.headers)) == (
            wanted,
            wanted.encode(),
            {"x-reason": "r"},
        )
        assert not await transport.move(
            source_queue="quarantine", message_id=wanted, exchange="inbound", routing_key=OWN_COUNTRY
        )

    async def test_non_mandatory_publish_may_go_nowhere(self, transport: Transport) -> None:
        await transport.publish(
            exchange="delivery",
            routing_key="legislation.change.-",
            body=b"x",
            message_id=new_id(),
            mandatory=False,
        )

    async def test_publish_logs_the_message_id(self, transport: Transport) -> None:
        message_id = new_id()
        with capture_logs() as events:
            await transport.publish(
                exchange="inbound", routing_key=OWN_COUNTRY, body=b"x", message_id=message_id
            )
        published = [e for e in events if e["event"] == "transport.published"]
        assert [e["message_id"] for e in published] == [message_id]

    async def test_missing_queue_is_a_config_error(self, transport: Transport) -> None:
        with pytest.raises(TransportError) as caught:
            await transport.queue_counts("sub.NOBODY")
        assert caught.value.reason is Reason.CONFIG_INVALID


def _inbound_without_delivery_limit() -> Declarations:
    inbound = vhost_declarations(OWN_COUNTRY, ["ru"]).queues[0]
    arguments = tuple(pair for pair in inbound.arguments if pair[0] != "x-delivery-limit")
    return Declarations(exchanges=(), queues=(replace(inbound, arguments=arguments),), bindings=())


async def _done(items: list[IncomingMessage], *, count: int = 1) -> bool:
    return len(items) >= count


async def _has_messages(transport: Transport, queue: str) -> bool:
    messages, _ = await transport.queue_counts(queue)
    return messages > 0
