"""Fixtures of the chaos suite: a RabbitMQ node of its own and one development exchange on it.

The node is started once per session and stopped at the end; faults (stop_app, cut links) are only
ever injected into it. When it cannot start, the fixture raises: the suite fails rather than skips.
The exchange is made once per session too (over the node's management API); each test gets fresh
state directories (audit log, outbox) and empty queues.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from broker.exchange.devkit import DevExchange, provision_dev_exchange, write_settings_file
from broker.exchange.topology import subscriber_queue
from broker.exchange.transport import RabbitTransport
from broker.state.settings import ExchangeSettings

from .node import ChaosNode

COUNTRIES = ("TJ", "RU")
CONSULATE = {"TJ": "TJ-CONSULATE-MOSCOW", "RU": "RU-CONSULATE-DUSHANBE"}


@dataclass(frozen=True)
class ChaosExchange:
    node: ChaosNode
    dev: DevExchange

    def settings(self, country: str, state_dir: Path, **overrides: object) -> ExchangeSettings:
        """This country's settings with its audit log and outbox under `state_dir/<cc>/`."""
        return self.dev.settings[country].model_copy(update={"state_dir": state_dir, **overrides})

    def write_config(self, country: str, state_dir: Path) -> Path:
        """A gateway.toml for `broker gateway` / the chaos workers (tuning comes by EXCHANGE_* variables)."""
        path = state_dir / country.lower() / "gateway.toml"
        write_settings_file(path, self.settings(country, state_dir))
        return path

    def vhost(self, country: str) -> str:
        return self.dev.brokers[country].vhost

    async def empty_queues(self) -> None:
        # Shovels stopped first: a message a shovel holds unacknowledged survives a purge and lands
        # in the peer's inbound after it (seen under load, after the Jepsen run).
        names = {(shovel.vhost, shovel.name) for plan in self.dev.plans for shovel in plan.shovels}
        for vhost, name in names:
            await asyncio.to_thread(self.node.admin.delete_shovel, vhost, name)

        try:
            # Gone from the status page: their channels closed, what they held is back in its queue.
            async with asyncio.timeout(60):
                while names & await self._running_shovels():  # noqa: ASYNC110 - the API raises no event
                    await asyncio.sleep(0.2)
            await self._purge_every_queue()
        finally:
            await asyncio.to_thread(self.restore_shovels)

    async def _running_shovels(self) -> set[tuple[str, str]]:
        running = await asyncio.to_thread(self.node.admin.shovel_status)
        return {(status.vhost, status.name) for status in running}

    async def _purge_every_queue(self) -> None:
        for country in COUNTRIES:
            transport = await RabbitTransport.connect(
                url=self.dev.gateway_url(country), name=f"chaos-reset-{country}"
            )
            try:
                present = await asyncio.to_thread(self.node.queues, self.vhost(country))
                for queue in present:
                    await transport.purge(queue)
            finally:
                await transport.close()

    def restore_shovels(self) -> None:
        for plan in self.dev.plans:
            self.node.admin.start_shovels(plan, self.dev.passwords)


@pytest.fixture(scope="session")
def chaos_node() -> Iterator[ChaosNode]:
    # Directly under /tmp: the node runs as the `rabbitmq` user, which cannot enter pytest's
    # private temporary directories.
    node = ChaosNode.start(Path(tempfile.mkdtemp(prefix="chaos-node-", dir="/tmp")))
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def chaos_exchange(
    chaos_node: ChaosNode, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChaosExchange]:
    workdir = tmp_path_factory.mktemp("chaos-exchange")
    provisioning = provision_dev_exchange(
        workdir, vhost_prefix=f"c{secrets.token_hex(3)}-", rabbit_host=chaos_node.host, admin=chaos_node.admin
    )
    # Its own thread and event loop: pytest-asyncio owns the loop of the test that asks first.
    with ThreadPoolExecutor(max_workers=1) as worker:
        dev = worker.submit(asyncio.run, provisioning).result()
    exchange = ChaosExchange(node=chaos_node, dev=dev)
    with ThreadPoolExecutor(max_workers=1) as worker:
        worker.submit(asyncio.run, _declare_consulates(exchange)).result()
    try:
        yield exchange
    finally:
        chaos_node.ctl("start_app", check=False)  # a failed test may have left the node stopped
        dev.teardown(chaos_node.admin)


async def _declare_consulates(exchange: ChaosExchange) -> None:
    """Each side's consulate queue, bound to the message type the chaos run sends."""
    for country in COUNTRIES:
        transport = await RabbitTransport.connect(
            url=exchange.dev.gateway_url(country), name=f"chaos-declare-{country}"
        )
        try:
            await transport.declare_subscriber_queue(CONSULATE[country], ["labour_market.report.*"])
        finally:
            await transport.close()
        assert subscriber_queue(CONSULATE[country]) in exchange.node.queues(exchange.vhost(country))


@pytest_asyncio.fixture
async def exchange(chaos_exchange: ChaosExchange) -> ChaosExchange:
    """The session's exchange with every queue empty (a test that stops the node or re-routes a
    shovel puts it back itself)."""
    await chaos_exchange.empty_queues()
    return chaos_exchange
