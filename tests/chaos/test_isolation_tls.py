"""Isolation the broker enforces for us: no forged `user-id`, and TLS with a locally generated CA.

`tests/exchange/test_transport.py` already shows one country's users cannot read, write or configure the
other's vhost, and `tests/deploy/test_compose.py` that the compose deployment takes its admin from secrets
(so no guest). Here, on the chaos node (which has no guest user either): a publisher that claims
another user's name in the AMQP `user-id` property is refused by the broker, and the transport
connects over AMQPS, verifying the node's certificate against our own CA and refusing any other.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import quote, urlencode

import aio_pika
import aiormq.exceptions
import pytest

from broker.core.errors import TransportError
from broker.exchange.transport import RabbitTransport

from .conftest import ChaosExchange
from .node import make_tls_files

pytestmark = [pytest.mark.chaos, pytest.mark.rabbitmq]


async def publish_as(url: str, *, user_id: str) -> None:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        inbound = await channel.get_exchange("inbound", ensure=False)
        await inbound.publish(
            aio_pika.Message(b"claims to be someone else", message_id=str(uuid.uuid4()), user_id=user_id),
            routing_key="tj",
        )
    finally:
        await connection.close()


async def test_a_spoofed_user_id_is_refused(exchange: ChaosExchange) -> None:
    """The Russian link may publish into Tajik inbound, but not in the name of the Tajik gateway."""
    tj = exchange.dev.brokers["TJ"]
    link_user = exchange.dev.brokers["RU"].link_user
    as_link = tj.uri_for(user=link_user, password=exchange.dev.passwords[link_user])

    with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed, match="user_id"):
        await publish_as(as_link, user_id=tj.gateway_user)
    await publish_as(as_link, user_id=link_user)  # its own name is fine

    checker = await RabbitTransport.connect(url=exchange.dev.gateway_url("TJ"), name="chaos-user-id-check")
    try:
        [arrived] = await checker.peek("inbound")
    finally:
        await checker.close()
    assert arrived.body == b"claims to be someone else"


def amqps_url(exchange: ChaosExchange, *, cafile: Path) -> str:
    tj = exchange.dev.brokers["TJ"]
    password = exchange.dev.passwords[tj.gateway_user]
    # `localhost` is the name in the node's certificate: the hostname is checked too.
    return (
        f"amqps://{quote(tj.gateway_user, safe='')}:{quote(password, safe='')}@localhost:"
        f"{exchange.node.tls_port}/{quote(tj.vhost, safe='')}?{urlencode({'cafile': str(cafile)})}"
    )


async def test_tls_to_the_broker_verifies_its_certificate(exchange: ChaosExchange, tmp_path: Path) -> None:
    transport = await RabbitTransport.connect(
        url=amqps_url(exchange, cafile=exchange.node.tls.ca_cert), name="chaos-tls"
    )
    try:
        await transport.publish(exchange="inbound", routing_key="tj", body=b"over TLS", message_id="tls-1")
        received = await transport.get("inbound")
    finally:
        await transport.close()
    assert received is not None
    assert received.body == b"over TLS"

    impostor_ca = make_tls_files(tmp_path).ca_cert
    with pytest.raises(TransportError):
        await RabbitTransport.connect(url=amqps_url(exchange, cafile=impostor_ca), name="chaos-tls-wrong-ca")
