"""The shipped RabbitMQ node settings, on a node that runs them (the chaos node loads them).

Security review (issue 21), item 4: RabbitMQ's default max_message_size (128 MiB) let a peer push
bodies 32 times bigger than any gateway opens. deploy/rabbitmq/rabbitmq.conf sets twice the
gateways' limit; here a real node started with that file is probed for it as `topology apply` does, takes a body of exactly that
size and refuses one byte more, and `broker topology apply`'s check accepts it.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from broker.core.errors import TransportError
from broker.exchange.provisioning import probe_message_size
from broker.exchange.topology import INBOUND, Permissions, check_message_size_limits, vhost_declarations
from broker.exchange.transport import RabbitTransport
from broker.state.settings import DEFAULT_MAX_MESSAGE_BYTES

from .node import ChaosNode

pytestmark = [pytest.mark.chaos, pytest.mark.rabbitmq]

SHIPPED_LIMIT = 2 * DEFAULT_MAX_MESSAGE_BYTES


@pytest_asyncio.fixture
async def link_vhost(chaos_node: ChaosNode) -> AsyncIterator[RabbitTransport]:
    vhost, user, password = (
        f"cfg-{secrets.token_hex(3)}",
        f"cfg-{secrets.token_hex(3)}",
        secrets.token_hex(12),
    )
    admin = chaos_node.admin
    await asyncio.to_thread(admin.ensure_vhost, vhost)
    await asyncio.to_thread(admin.ensure_user, user, password)
    await asyncio.to_thread(
        admin.ensure_permissions, Permissions(user=user, vhost=vhost, configure=".*", write=".*", read=".*")
    )
    transport = await RabbitTransport.connect(
        url=f"amqp://{user}:{password}@{chaos_node.host}/{vhost}", name="chaos-config"
    )
    try:
        await transport.declare(vhost_declarations("tj", ["ru"]))
        yield transport
    finally:
        await transport.close()
        await asyncio.to_thread(admin.delete_vhost, vhost)
        await asyncio.to_thread(admin.delete_user, user)


async def test_the_probe_finds_the_shipped_limit_and_it_fits_the_gateways(
    link_vhost: RabbitTransport,
) -> None:
    verdict = await probe_message_size(link_vhost, DEFAULT_MAX_MESSAGE_BYTES)

    assert verdict == check_message_size_limits(
        broker_limit=SHIPPED_LIMIT, gateway_limit=DEFAULT_MAX_MESSAGE_BYTES
    )
    assert "fits" in verdict


async def test_the_node_takes_a_body_at_its_limit_and_refuses_one_byte_more(
    link_vhost: RabbitTransport,
) -> None:
    await link_vhost.publish(exchange=INBOUND, routing_key="tj", body=b"a" * SHIPPED_LIMIT, message_id="at")
    with pytest.raises(TransportError, match="max size"):
        await link_vhost.publish(
            exchange=INBOUND, routing_key="tj", body=b"a" * (SHIPPED_LIMIT + 1), message_id="over"
        )

    assert (await link_vhost.queue_counts("inbound"))[0] == 1
