"""Fixtures for tests against the real RabbitMQ on 127.0.0.1:5672.

One link per test session, in vhosts `t-<random>-tj` and `t-<random>-ru` with their own users, so
tests never touch the demo's `tj`/`ru`; all of it is deleted afterwards. When RabbitMQ is down the
fixture raises, so the tests fail rather than skip. Test modules import the fixtures they use.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import pytest_asyncio

from broker.exchange.plan import BrokerPlan
from broker.exchange.provisioning import apply_topology, needed_users, plans_for
from broker.exchange.rabbit_admin import RabbitAdmin
from broker.exchange.topology import CountryBroker
from broker.exchange.transport import RabbitTransport

RABBIT_HOST = "127.0.0.1:5672"
# RabbitMQ's default max_message_size (3.8 and later), for a node whose configuration sets none.
RABBITMQ_DEFAULT_MAX_MESSAGE_SIZE = 128 * 1024 * 1024


def node_max_message_size(*node_options: str) -> int:
    """The local node's effective max_message_size, read the one way it can be read: `rabbitmqctl eval`
    on the node's host. The product probes it over AMQP instead; this is the tests' independent check."""
    output = subprocess.run(
        ["rabbitmqctl", *node_options, "--quiet", "eval", "application:get_env(rabbit, max_message_size)."],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.strip()
    if output == "undefined":
        return RABBITMQ_DEFAULT_MAX_MESSAGE_SIZE
    match = re.fullmatch(r"\{ok,\s*(\d+)\}", output)
    assert match is not None, output
    return int(match.group(1))


@dataclass(frozen=True)
class RabbitLink:
    tj: CountryBroker
    ru: CountryBroker
    plans: tuple[BrokerPlan, ...]
    passwords: dict[str, str]
    admin: RabbitAdmin

    def gateway_url(self, broker: CountryBroker) -> str:
        return broker.uri_for(user=broker.gateway_user, password=self.passwords[broker.gateway_user])

    def url_as(self, broker: CountryBroker, *, user: str) -> str:
        """`broker`'s vhost, logged in as any user of the link (to test what that user may do)."""
        return broker.uri_for(user=user, password=self.passwords[user])


@pytest.fixture(scope="session")
def rabbit_link() -> Iterator[RabbitLink]:
    prefix = f"t-{secrets.token_hex(3)}"
    brokers = [CountryBroker(country=c, url=f"amqp://{RABBIT_HOST}/{prefix}-{c}") for c in ("tj", "ru")]
    plans = tuple(plans_for(brokers, None))
    passwords = {user: secrets.token_urlsafe(16) for user in needed_users(plans)}
    admin = RabbitAdmin()
    link = RabbitLink(tj=brokers[0], ru=brokers[1], plans=plans, passwords=passwords, admin=admin)
    try:
        # Its own thread and event loop: pytest-asyncio owns the loop of this one.
        with ThreadPoolExecutor(max_workers=1) as worker:
            worker.submit(asyncio.run, apply_topology(plans=plans, passwords=passwords, admin=admin)).result()
        yield link
    finally:
        for broker in brokers:
            admin.delete_vhost(broker.vhost)
        for user in passwords:
            admin.delete_user(user)
        admin.close()


async def _gateway_transport(link: RabbitLink, broker: CountryBroker) -> AsyncIterator[RabbitTransport]:
    transport = await RabbitTransport.connect(
        url=link.gateway_url(broker), name=f"test-{broker.country}-gateway"
    )
    await transport.purge("inbound")
    await transport.purge("quarantine")
    yield transport
    await transport.close()


@pytest_asyncio.fixture
async def tj_gateway(rabbit_link: RabbitLink) -> AsyncIterator[RabbitTransport]:
    """The tj gateway's transport, with its inbound and quarantine queues emptied first."""
    async for transport in _gateway_transport(rabbit_link, rabbit_link.tj):
        yield transport


@pytest_asyncio.fixture
async def ru_gateway(rabbit_link: RabbitLink) -> AsyncIterator[RabbitTransport]:
    """The ru gateway's transport, with its inbound and quarantine queues emptied first."""
    async for transport in _gateway_transport(rabbit_link, rabbit_link.ru):
        yield transport
