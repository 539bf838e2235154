"""Client-side network faults through a TCP proxy, as aio-pika's own tests inject them.

The transport reaches the chaos node through `TcpProxy`; the proxy drops every connection, slows
every chunk, or stalls past the heartbeat. Whatever it does, a publish returns or raises a
TransportError within its confirm deadline, the consumer is back on the broker afterwards (counted by
`rabbitmqctl list_queues`), and a gateway re-sends what was never confirmed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from broker.core.catalogue.samples import sample_payloads
from broker.core.errors import Reason, TransportError
from broker.exchange.gateway import Gateway
from broker.exchange.transport import RabbitTransport
from broker.exchange.transport_api import Disposition, IncomingMessage
from broker.state.outbox import SendState

from .conftest import ChaosExchange
from .helpers import eventually, queue_state, via_proxy
from .tcp_proxy import TcpProxy

pytestmark = [pytest.mark.chaos, pytest.mark.rabbitmq]

HEARTBEAT_S = 2
# Slack for scheduling on a loaded 2-core CI machine, on top of the deadline under test.
SLACK_S = 1.5


@pytest_asyncio.fixture
async def proxy(exchange: ChaosExchange) -> AsyncIterator[TcpProxy]:
    async with TcpProxy(upstream_host="127.0.0.1", upstream_port=exchange.node.amqp_port) as running:
        yield running


@pytest_asyncio.fixture
async def proxied(exchange: ChaosExchange, proxy: TcpProxy) -> AsyncIterator[RabbitTransport]:
    """The Tajik gateway's transport, through the proxy, with a short heartbeat and quick reconnects."""
    url = via_proxy(exchange.dev.gateway_url("TJ"), proxy.port, heartbeat=HEARTBEAT_S, reconnect_interval=1)
    transport = await RabbitTransport.connect(url=url, name="chaos-proxied-tj")
    yield transport
    proxy.restore()
    await transport.close()


class Inbox:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def handle(self, message: IncomingMessage) -> Disposition:
        self.bodies.append(message.body)
        return Disposition.ACK


def inbound_consumers(exchange: ChaosExchange, expected: int) -> Callable[[], Awaitable[bool]]:
    """A check for `eventually`: the broker counts `expected` consumers on Tajik inbound."""

    async def check() -> bool:
        return (await queue_state(exchange, "TJ", "inbound"))["consumers"] == expected

    return check


def arrived(inbox: Inbox, body: bytes) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return body in inbox.bodies

    return check


async def publish_to_inbound(transport: RabbitTransport, body: bytes, *, deadline_s: float) -> None:
    await transport.publish(
        exchange="inbound", routing_key="tj", body=body, message_id=str(uuid.uuid4()), timeout=deadline_s
    )


async def test_dropped_connections_fail_fast_and_the_consumer_comes_back(
    exchange: ChaosExchange, proxy: TcpProxy, proxied: RabbitTransport
) -> None:
    inbox = Inbox()
    await proxied.consume("inbound", inbox.handle)
    await eventually(inbound_consumers(exchange, 1))

    assert await proxy.cut(refuse=True) >= 1
    started = time.monotonic()
    with pytest.raises(TransportError) as refused:
        await publish_to_inbound(proxied, b"while cut", deadline_s=2)
    assert time.monotonic() - started < 2 + SLACK_S
    assert refused.value.reason in {Reason.TRANSPORT_NOT_CONFIRMED, Reason.TRANSPORT_UNAVAILABLE}
    await eventually(inbound_consumers(exchange, 0))

    proxy.restore()
    await eventually(inbound_consumers(exchange, 1))
    await publish_to_inbound(proxied, b"after the cut", deadline_s=10)
    await eventually(arrived(inbox, b"after the cut"))
    assert b"while cut" not in inbox.bodies


async def test_slow_network_is_bounded_by_the_confirm_deadline(
    exchange: ChaosExchange, proxy: TcpProxy, proxied: RabbitTransport
) -> None:
    proxy.delay_s = 0.4  # every chunk, each way

    with pytest.raises(TransportError) as late:
        await publish_to_inbound(proxied, b"too slow", deadline_s=0.3)
    assert late.value.reason is Reason.TRANSPORT_NOT_CONFIRMED

    # Slow is not broken: with a deadline longer than the round trip the confirm arrives.
    await publish_to_inbound(proxied, b"slow but fine", deadline_s=10)
    proxy.restore()
    messages, _ = await proxied.queue_counts("inbound")
    assert messages >= 1  # at least the confirmed one; the late one may have landed too


async def test_a_stall_past_the_heartbeat_fails_fast_then_reconnects(
    exchange: ChaosExchange, proxy: TcpProxy, proxied: RabbitTransport
) -> None:
    inbox = Inbox()
    await proxied.consume("inbound", inbox.handle)
    await eventually(inbound_consumers(exchange, 1))

    proxy.stall()
    with pytest.raises(TransportError):
        await publish_to_inbound(proxied, b"into the void", deadline_s=2)
    # The broker misses our heartbeats and drops the connection (and its consumer).
    await eventually(inbound_consumers(exchange, 0), seconds=6 * HEARTBEAT_S + 10)

    await proxy.cut()
    proxy.restore()
    await eventually(inbound_consumers(exchange, 1), seconds=30)
    await publish_to_inbound(proxied, b"after the stall", deadline_s=10)
    await eventually(arrived(inbox, b"after the stall"))


async def test_a_gateway_resends_what_the_broker_never_confirmed(
    exchange: ChaosExchange, proxy: TcpProxy, tmp_path: Path
) -> None:
    deadlines = {"labour_market.report": 1.0, "*": 1.0}
    tj_settings = exchange.settings(
        "TJ",
        tmp_path,
        amqp_url=via_proxy(exchange.dev.settings["TJ"].amqp_url, proxy.port, reconnect_interval=1),
        receipt_deadlines_s=deadlines,
        resend_check_interval_s=0.5,
        confirm_timeout_s=2.0,
    )
    ru_settings = exchange.settings("RU", tmp_path, receipt_deadlines_s=deadlines)
    report = sample_payloads()["labour_market.report"]
    async with Gateway.from_settings(tj_settings) as tj, Gateway.from_settings(ru_settings) as ru:
        await proxy.cut(refuse=True)
        with pytest.raises(TransportError):
            await tj.send(report, to="RU-MINTRUD", sender="TJ-MOL")
        [record] = await tj.outbox.records()
        assert record.state is SendState.SENT  # recorded, never confirmed

        proxy.restore()

        async def receipted() -> bool:
            current = await tj.outbox.get(record.message_id)
            return current is not None and current.state is SendState.RECEIPTED

        await eventually(receipted, seconds=40)
        resent = await tj.outbox.get(record.message_id)
        assert resent is not None
        assert resent.attempts >= 2
        received = [entry for entry in await ru.trail(record.message_id) if entry.kind == "received"]
        assert len(received) == 1
