"""A gateway's status port against the real RabbitMQ: /metrics, /healthz, /readyz and nothing else.

Readiness follows the peer link as the shovel's consumer on `outbound.ru` shows it: the test re-points
tj's shovel through a TCP proxy, cuts the proxy, and polls /readyz until it says not ready (the issue
asks for 5 s), then lets the link through again and polls until it is ready again. The gateway's user
reads no management API for it: it has no tag at all.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.exchange.gateway import Gateway
from broker.exchange.health import CHECK_TIMEOUT_S
from broker.exchange.management_api import ManagementEndpoint, path_of
from broker.exchange.rabbit_admin import RabbitAdmin
from broker.exchange.status_server import StatusServer, serving_status
from broker.exchange.topology import CountryBroker, ShovelSpec
from tests.chaos.tcp_proxy import TcpProxy
from tests.support.exchange import ExchangeHarness

pytestmark = pytest.mark.rabbitmq

BROKER_CLI = Path(sys.executable).parent / "broker"
# The bound: not ready within 5 s of the link going down.
LINK_DOWN_DEADLINE_S = 5.0
# Generous: the shovel reconnects after its 1 s reconnect delay.
LINK_BACK_DEADLINE_S = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def status_of(exchange: ExchangeHarness, gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway's status port on a free local port, and a client pointed at it."""
    settings = exchange.settings("TJ", metrics_port=free_port())
    async with serving_status(gateway, settings) as server:
        assert isinstance(server, StatusServer)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client:
            yield client


async def readyz(client: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    response = await client.get("/readyz")
    body: dict[str, Any] = response.json()
    return response.status_code, body


async def poll_readyz(client: httpx.AsyncClient, *, ready: bool, within_s: float) -> dict[str, Any]:
    """Poll /readyz until it says `ready`; fail after `within_s` seconds with the last answer."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        status, body = await readyz(client)
        if body["ready"] is ready:
            assert status == (200 if ready else 503)
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"/readyz did not turn ready={ready} within {within_s} s: {body}")
        await asyncio.sleep(0.1)


async def test_the_status_port_serves_metrics_liveness_and_readiness_only(exchange: ExchangeHarness) -> None:
    gateway = await exchange.new_gateway("TJ")
    async with status_of(exchange, gateway) as client:
        alive = await client.get("/healthz")
        metrics = await client.get("/metrics")
        elsewhere = await client.get("/")
        posted = await client.post("/readyz")
        body = await poll_readyz(client, ready=True, within_s=LINK_BACK_DEADLINE_S)

    assert (alive.status_code, alive.json()) == (200, {"alive": True})
    assert metrics.status_code == 200
    assert "exchange_receipts_outstanding" in metrics.text
    assert elsewhere.status_code == 404
    assert posted.status_code == 405
    assert set(body["checks"]) == {"broker", "audit", "keys", "peer_link"}
    assert all(check["ok"] for check in body["checks"].values()), body
    assert body["checks"]["peer_link"]["detail"].startswith("shovel tj-to-ru: running (consuming outbound.ru")


async def test_readyz_follows_the_peer_link_down_and_back(exchange: ExchangeHarness) -> None:
    dev = exchange.dev
    tj, ru = dev.brokers["TJ"], dev.brokers["RU"]
    [tj_plan] = [plan for plan in dev.plans if plan.broker == tj]
    gateway = await exchange.new_gateway("TJ")
    with RabbitAdmin() as admin:
        async with TcpProxy(upstream_host="127.0.0.1", upstream_port=5672) as proxy:
            # tj's shovel reaches ru's broker through the proxy, the way a WAN link would.
            via_proxy = CountryBroker(country="ru", url=f"amqp://127.0.0.1:{proxy.port}/{ru.vhost}")
            await asyncio.to_thread(admin.ensure_shovel, ShovelSpec(tj, via_proxy), dev.passwords)
            try:
                await asyncio.to_thread(admin.wait_for_shovel, tj.vhost, "tj-to-ru")
                async with status_of(exchange, gateway) as client:
                    await poll_readyz(client, ready=True, within_s=LINK_BACK_DEADLINE_S)

                    await proxy.cut(refuse=True)
                    down = await poll_readyz(client, ready=False, within_s=LINK_DOWN_DEADLINE_S)
                    proxy.restore()
                    back = await poll_readyz(client, ready=True, within_s=LINK_BACK_DEADLINE_S)
            finally:
                proxy.restore()
                await asyncio.to_thread(admin.start_shovels, tj_plan, dev.passwords)

    assert not down["checks"]["peer_link"]["ok"]
    assert down["checks"]["peer_link"]["detail"].startswith("shovel tj-to-ru: not consuming outbound.ru")
    assert all(down["checks"][name]["ok"] for name in ("broker", "audit", "keys")), down
    assert back["checks"]["peer_link"]["ok"]


async def test_readyz_names_an_audit_store_another_process_keeps_locked(exchange: ExchangeHarness) -> None:
    gateway = await exchange.new_gateway("TJ")
    async with status_of(exchange, gateway) as client:
        await poll_readyz(client, ready=True, within_s=LINK_BACK_DEADLINE_S)
        # Another writer (a stuck auditor's transaction, say) holds the audit database's write lock.
        locker = sqlite3.connect(exchange.state_dir / "tj" / "audit.sqlite", isolation_level=None)
        try:
            locker.execute("BEGIN IMMEDIATE")
            status, body = await readyz(client)
        finally:
            locker.close()
        back = await poll_readyz(client, ready=True, within_s=LINK_BACK_DEADLINE_S)

    assert status == 503
    assert body["checks"]["audit"] == {"ok": False, "detail": f"no answer within {CHECK_TIMEOUT_S} s"}
    assert body["checks"]["broker"]["ok"]
    assert back["checks"]["audit"] == {"ok": True, "detail": "writable"}


async def test_the_gateway_user_reads_nothing_of_the_management_api(exchange: ExchangeHarness) -> None:
    dev = exchange.dev
    tj = dev.brokers["TJ"]
    endpoint = ManagementEndpoint.configure().as_user(tj.gateway_user, dev.passwords[tj.gateway_user])
    async with endpoint.async_client() as client:
        answers = [
            await client.get(path_of(*where)) for where in (("shovels", tj.vhost), ("users",), ("overview",))
        ]

    # Without a tag RabbitMQ lets the user log in to no part of the API.
    assert [answer.status_code for answer in answers] == [401, 401, 401]


def test_a_second_gateway_on_a_taken_metrics_port_says_so_in_one_line(
    exchange: ExchangeHarness, tmp_path: Path
) -> None:
    config = exchange.dev.settings["TJ"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "EXCHANGE_METRICS_PORT": str(port),
            "EXCHANGE_STATE_DIR": str(tmp_path),
        }
        result = subprocess.run(
            [str(BROKER_CLI), "gateway", "--country", "TJ", "--config", str(config_file(exchange))],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )

    assert result.returncode == 1, result.stdout + result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert line.startswith(f"error [config.invalid] metrics_address:metrics_port 127.0.0.1:{port} ")
    assert "already in use" in line
    assert "Traceback" not in result.stderr
    assert config.amqp_url not in result.stderr


def config_file(exchange: ExchangeHarness) -> Path:
    """The TJ gateway.toml the development kit wrote next to the session's keys."""
    return exchange.dev.settings["TJ"].state_dir / "tj" / "gateway.toml"
