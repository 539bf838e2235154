"""Fixtures for tests of the whole exchange: both gateways over the real RabbitMQ and its shovels.

One development exchange per test session, built by `provision_dev_exchange` in vhosts
`t-<hex>-tj` and `t-<hex>-ru` (own users, shovels both ways) and deleted at the end. Each test gets
gateways assembled afresh, with their own audit logs and outboxes but the session's keys, and every
queue emptied before and after it. When RabbitMQ is down the session fixture raises, so the tests
fail rather than skip. `tests/exchange/conftest.py` registers its fixtures.

The PKI is issued 60 days in the past, so a test can sign a message "created 30 days ago" under a
certificate valid at that time: the receiver must then refuse it for its age, not its certificate.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio
import structlog

from broker.cli.demo import CONSULATE, ROUTES
from broker.core.errors import Reason, TransportError
from broker.core.trust import TrustStore
from broker.exchange.devkit import DevExchange, provision_dev_exchange, remove_dev_exchange
from broker.exchange.gateway import Gateway, gateway_from_settings
from broker.exchange.gateway.context import Clock, utc_now
from broker.exchange.rabbit_admin import RabbitAdmin
from broker.exchange.subscriber import Subscription
from broker.exchange.topology import INBOUND, QUARANTINE, SUBMIT, outbound_queue, subscriber_queue
from broker.exchange.transport import RabbitTransport
from broker.state.settings import ExchangeSettings

T = TypeVar("T")

RABBIT_HOST = "127.0.0.1:5672"
PKI_AGE = timedelta(days=60)
COUNTRIES = ("TJ", "RU")
# The six notification types of the agreement (Art. 3.3, 12.2, 14, 15.5).
NOTIFICATION_TYPES = tuple(message_type for message_type, _, _ in ROUTES["TJ"])
# Authorities whose roles may receive every notification: their queues show what a gateway delivered.
MINISTRY_SUBSCRIBER = {"TJ": "TJ-MOL", "RU": "RU-MVD"}
# Subscriber queues a test may have declared; emptied when present.
OTHER_SUBSCRIBERS = {"TJ": (CONSULATE,), "RU": ("RU-CONSULATE-DUSHANBE",)}


def peer_of(country: str) -> str:
    return "RU" if country == "TJ" else "TJ"


async def wait_until(check: Callable[[], Awaitable[T | None]], *, what: str, timeout_s: float = 15.0) -> T:
    """Poll `check` until it returns something truthy and return that; fail naming `what` otherwise.

    The broker and the gateways send no event a test could await, so the condition is polled.
    """
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last: {value!r})")
        await asyncio.sleep(0.05)


@pytest.fixture(scope="session")
def dev_exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevExchange]:
    """Dev PKI, topology and shovels of both countries, once per session."""
    workdir = tmp_path_factory.mktemp("exchange")
    vhost_prefix = f"t-{secrets.token_hex(3)}-"
    admin = RabbitAdmin()
    issued_at = datetime.now(UTC) - PKI_AGE

    def provision() -> DevExchange:
        # Its own event loop: pytest-asyncio owns the loop of each test.
        return asyncio.run(
            provision_dev_exchange(
                workdir, vhost_prefix=vhost_prefix, rabbit_host=RABBIT_HOST, admin=admin, now=issued_at
            )
        )

    try:
        with ThreadPoolExecutor(max_workers=1) as worker:
            exchange = worker.submit(provision).result()
        yield exchange
    finally:
        remove_dev_exchange(vhost_prefix=vhost_prefix, rabbit_host=RABBIT_HOST, admin=admin)
        admin.close()


class ExchangeHarness:
    """The session's exchange seen from one test: gateways on demand and a look into each broker.

    `broker[country]` is a connection of that country's gateway user, for inspecting queues and
    injecting bytes as if the shovel had brought them. The helpers are reached through the fixture
    so that test modules need not import this plugin module themselves.
    """

    wait_until = staticmethod(wait_until)
    peer_of = staticmethod(peer_of)

    def __init__(self, *, dev: DevExchange, state_dir: Path, broker: dict[str, RabbitTransport]) -> None:
        self.dev = dev
        self.state_dir = state_dir
        self.broker = broker
        self.trust: TrustStore = dev.keystore.trust_store(dev.agreement.countries)
        self._gateways: list[Gateway] = []

    def settings(self, country: str, **overrides: Any) -> ExchangeSettings:
        base = self.dev.settings[country].model_dump()
        return ExchangeSettings.load(None, **{**base, "state_dir": self.state_dir, **overrides})

    async def new_gateway(
        self, country: str, *, start: bool = True, clock: Clock = utc_now, **overrides: Any
    ) -> Gateway:
        """A gateway of `country` with this test's state dir; closed when the test ends."""
        gateway = await gateway_from_settings(self.settings(country, **overrides), clock=clock)
        self._gateways.append(gateway)
        if start:
            await gateway.start()
        return gateway

    async def ready(self, country: str, queue: str) -> int:
        """Messages waiting in `queue` (not counting any a consumer holds unacknowledged)."""
        waiting, _ = await self.broker[country].queue_counts(queue)
        return waiting

    async def held(self, country: str, queue: str) -> int:
        """Messages in `queue` including unacknowledged ones (the management API's figure, which
        lags the queue by up to its statistics interval, 5 s: poll it)."""
        with RabbitAdmin() as admin:
            counts = await asyncio.to_thread(admin.queue_counts, self.dev.brokers[country].vhost)
        return counts[queue][0]

    @staticmethod
    def ministry_queue(country: str) -> str:
        """The queue of the ministry subscribed to every notification type in `country`."""
        return subscriber_queue(MINISTRY_SUBSCRIBER[country])

    async def ministry_deliveries(self, country: str) -> int:
        return await self.ready(country, self.ministry_queue(country))

    async def declare_ministry_subscribers(self) -> None:
        for country in COUNTRIES:
            subscription = Subscription(
                transport=self.broker[country],
                agreement=self.dev.agreement,
                trust=self.trust,
                authority_id=MINISTRY_SUBSCRIBER[country],
                types=NOTIFICATION_TYPES,
            )
            await subscription.declare()

    async def empty_queues(self) -> None:
        for country in COUNTRIES:
            for queue in (outbound_queue(peer_of(country).lower()), INBOUND, QUARANTINE, SUBMIT):
                await self.broker[country].purge(queue)
            for subscriber in (MINISTRY_SUBSCRIBER[country], *OTHER_SUBSCRIBERS[country]):
                try:
                    await self.broker[country].purge(subscriber_queue(subscriber))
                except TransportError as missing:  # never declared
                    if missing.reason != Reason.CONFIG_INVALID:
                        raise

    async def close_gateways(self) -> None:
        for gateway in self._gateways:
            await gateway.close()
        self._gateways.clear()

    async def drain_links(self) -> None:
        """Let the shovels carry what is still outbound, so it cannot land in the next test."""

        async def drained() -> bool:
            for country in COUNTRIES:
                if await self.ready(country, outbound_queue(peer_of(country).lower())):
                    return False
            return True

        await wait_until(drained, what="the shovels to empty both outbound queues", timeout_s=10)


@pytest_asyncio.fixture
async def exchange(dev_exchange: DevExchange, tmp_path: Path) -> AsyncIterator[ExchangeHarness]:
    broker = {
        country: await RabbitTransport.connect(url=dev_exchange.gateway_url(country), name=f"test-{country}")
        for country in COUNTRIES
    }
    harness = ExchangeHarness(dev=dev_exchange, state_dir=tmp_path, broker=broker)
    # A CLI test run earlier in the session may have pointed structlog at a stream that is closed now.
    structlog.reset_defaults()
    try:
        await harness.declare_ministry_subscribers()
        await harness.empty_queues()
        yield harness
    finally:
        await harness.close_gateways()
        try:
            await harness.drain_links()
            await harness.empty_queues()
        finally:
            for transport in broker.values():
                await transport.close()


@pytest_asyncio.fixture
async def gateways(exchange: ExchangeHarness) -> dict[str, Gateway]:
    """Both countries' gateways, running, with default settings."""
    return {country: await exchange.new_gateway(country) for country in COUNTRIES}


@contextmanager
def dev_exchange_in_thread(workdir: Path) -> Iterator[DevExchange]:
    """A development exchange of its own (keys, vhosts, users, shovels), deleted afterwards.

    Provisioned on its own thread and event loop: pytest-asyncio owns the loop of the tests.
    """
    with ThreadPoolExecutor(max_workers=1) as worker:
        dev = worker.submit(
            asyncio.run, provision_dev_exchange(workdir, vhost_prefix=f"t-{secrets.token_hex(3)}-")
        ).result()
    try:
        yield dev
    finally:
        dev.teardown()
