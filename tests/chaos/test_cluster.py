"""Cluster chaos run: both countries on a three-node RabbitMQ cluster, two gateways per country.

Each country's vhost lives on a cluster of three nodes of the suite's own (`cluster.py`), every queue
a quorum queue replicated on all three; the shovels list every node of both sides; the gateways list
the other nodes (`amqp_failover_hosts`) and reconnect to a surviving one. Each country runs two
gateway processes on one state folder: one active, one standby (the writer lock). While both sides
send labour-market reports the test:

1. stops the node holding the leader of Russia's `inbound` queue, starts it again 5 s later;
2. once it is back, stops another node (the leader of Tajikistan's `inbound`, or any other node),
   starts it again 5 s later;
3. SIGKILLs Tajikistan's active gateway: the standby takes over (the takeover time is measured);
4. cuts the TJ -> RU link: the shovel's connections to every node of Russia's cluster go through TCP
   proxies, which close them and refuse new ones for 6 s.

Then every message is classified from the outboxes, audit logs and consulate ledgers as the Jepsen
run does (`verdict.py`): lost, duplicated and unexpected must be zero.

Size: CLUSTER_MESSAGES per direction (default 200 so that `.ci/run` stays short; docs/reliability.md
reports a run with 1000); CHAOS_REPORT names a JSON file for the figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import pytest_asyncio

from broker.exchange.devkit import provision_dev_exchange

from .cluster import ChaosCluster
from .conftest import CONSULATE, ChaosExchange, _declare_consulates
from .processes import Worker
from .tcp_proxy import TcpProxy
from .verdict import Direction, classify, progress

pytestmark = [pytest.mark.chaos, pytest.mark.rabbitmq]

MESSAGES = int(os.environ.get("CLUSTER_MESSAGES", "200"))
# Sending lasts about 110 s whatever the count, so every fault (node restarts take 20-30 s each on a
# loaded 2-core machine) happens while both sides send; each fault's note says whether they still do.
RATE = max(3.0, MESSAGES / 110)
SETTLE_TIMEOUT_S = 300.0
NODE_DOWN_S = 5.0
STANDBY_POLL_S = 0.5
GATEWAY_ENV = {
    "EXCHANGE_RECEIPT_DEADLINES_S": json.dumps({"labour_market.report": 10, "*": 10}),
    "EXCHANGE_RESEND_CHECK_INTERVAL_S": "2",
    "EXCHANGE_CONFIRM_TIMEOUT_S": "5",
    "EXCHANGE_STANDBY_POLL_S": str(STANDBY_POLL_S),
    "EXCHANGE_LOG_FORMAT": "json",
}
SENDER = {"TJ": "TJ-MOL", "RU": "RU-MINTRUD"}
RECIPIENT = {"TJ": "RU-MINTRUD", "RU": "TJ-MOL"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[ChaosCluster]:
    started = ChaosCluster.start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def cluster_exchange(cluster: ChaosCluster) -> Iterator[ChaosExchange]:
    workdir = Path(tempfile.mkdtemp(prefix="chaos-cluster-exchange-"))
    first, *others = cluster.nodes
    provisioning = provision_dev_exchange(
        workdir,
        vhost_prefix="cl-",
        rabbit_host=first.host,
        rabbit_nodes=tuple(node.host for node in others),
        admin=first.admin,
    )
    with ThreadPoolExecutor(max_workers=1) as worker:
        dev = worker.submit(asyncio.run, provisioning).result()
    exchange = ChaosExchange(node=first, dev=dev)
    with ThreadPoolExecutor(max_workers=1) as worker:
        worker.submit(asyncio.run, _declare_consulates(exchange)).result()
    try:
        yield exchange
    finally:
        dev.teardown(first.admin)
        shutil.rmtree(workdir, ignore_errors=True)


def active_pid(state: Path) -> int | None:
    """The pid written into the country's writer lock file by the gateway holding it."""
    try:
        holder = json.loads((state / "gateway.lock").read_text(encoding="utf-8"))["holder"]
    except (OSError, ValueError, KeyError):
        return None
    return int(str(holder).rsplit(" pid ", 1)[1])


class ClusterRun:
    def __init__(self, *, exchange: ChaosExchange, workdir: Path) -> None:
        self.exchange = exchange
        self.workdir = workdir
        self.faults: list[str] = []
        self.started = time.monotonic()
        self.gateways: dict[str, list[Worker]] = {}
        self.subscribers: dict[str, Worker] = {}
        for country in ("TJ", "RU"):
            config = str(exchange.write_config(country, workdir))
            self.gateways[country] = [
                Worker(
                    name=f"{country}-gateway-{which}",
                    script="gateway_worker.py",
                    arguments=[
                        "--country",
                        country,
                        "--config",
                        config,
                        "--send",
                        str(MESSAGES),
                        "--sender",
                        SENDER[country],
                        "--to",
                        RECIPIENT[country],
                        "--rate",
                        str(RATE),
                    ],
                    env=GATEWAY_ENV,
                    log=workdir / f"{country.lower()}-gateway-{which}.log",
                )
                for which in ("a", "b")
            ]
            self.subscribers[country] = Worker(
                name=f"{country}-subscriber",
                script="subscriber_worker.py",
                arguments=["--country", country, "--config", config, "--authority", CONSULATE[country],
                           "--ledger", str(workdir / f"{country.lower()}-consulate.sqlite")],
                env=GATEWAY_ENV,
                log=workdir / f"{country.lower()}-subscriber.log",
            )  # fmt: skip
        self.takeover_s: float | None = None

    def note(self, fault: str) -> None:
        done = [c for c in ("TJ", "RU") if (self.state(c) / "sent-all").exists()]
        sending = "both sending" if not done else f"{' and '.join(done)} done sending"
        self.faults.append(f"t+{time.monotonic() - self.started:.0f}s {fault} [{sending}]")

    def state(self, country: str) -> Path:
        return self.workdir / country.lower()

    def active(self, country: str) -> Worker | None:
        pid = active_pid(self.state(country))
        return next((w for w in self.gateways[country] if w.pid == pid and not w.exited), None)

    async def supervise(self) -> None:
        while True:
            for worker in [*self.subscribers.values(), *(w for ws in self.gateways.values() for w in ws)]:
                if worker.exited and not worker.held:
                    self.note(f"{worker.name} exited; restarted")
                    await worker.start()
            await asyncio.sleep(0.5)

    async def stop(self) -> None:
        workers = [*(w for ws in self.gateways.values() for w in ws), *self.subscribers.values()]
        await asyncio.gather(*(worker.stop() for worker in workers))


async def until(check: object, *, what: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def node_down_and_up(run: ClusterRun, cluster: ChaosCluster, name: str, *, avoid: str | None) -> str:
    """Stop the node holding the leader of `name`'s inbound (another one if that is `avoid`)."""
    vhost = run.exchange.vhost(name)
    leader = await asyncio.to_thread(cluster.leader_of, vhost, "inbound")
    node = leader if leader.name != avoid else next(n for n in cluster.nodes if n.name != avoid)
    primary = " (every client's first node)" if node is cluster.first else ""
    run.note(f"stop_app {node.name}{primary} (leader of {vhost}/inbound: {leader.name})")
    await asyncio.to_thread(node.stop_app)
    await asyncio.sleep(NODE_DOWN_S)
    await asyncio.to_thread(node.start_app)
    await asyncio.to_thread(cluster.await_members, len(cluster.nodes))
    run.note(f"start_app {node.name}: back in the cluster")
    return node.name


async def kill_active_gateway(run: ClusterRun, country: str) -> None:
    victim = run.active(country)
    assert victim is not None, f"no active {country} gateway"
    victim.held = True
    await victim.kill()
    killed_at = time.monotonic()
    run.note(f"{victim.name} (active) SIGKILLed")

    def taken_over() -> bool:
        successor = run.active(country)
        return successor is not None and successor is not victim

    await until(taken_over, what=f"the {country} standby to take over", timeout_s=60)
    run.takeover_s = time.monotonic() - killed_at
    run.note(f"standby took over after {run.takeover_s:.1f} s; {victim.name} restarted as standby")
    await victim.start()
    victim.held = False


async def route_link_through(exchange: ChaosExchange, proxies: dict[int, TcpProxy], source: str) -> None:
    """The shovel leaving `source` reaches every node of the peer's cluster through a proxy."""
    dev, node = exchange.dev, exchange.node
    [shovel] = next(plan for plan in dev.plans if plan.broker.country == source.lower()).shovels
    definition = shovel.definition(dev.passwords)
    routed = []
    for uri in definition["dest-uri"]:
        parts = urlsplit(uri)
        credentials, _, hostport = parts.netloc.rpartition("@")
        port = int(hostport.rsplit(":", 1)[1])
        netloc = f"{credentials}@127.0.0.1:{proxies[port].port}"
        routed.append(urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")))
    definition["dest-uri"] = routed
    await asyncio.to_thread(
        node.ctl, "set_parameter", "-p", shovel.vhost, "shovel", shovel.name, json.dumps(definition)
    )
    await asyncio.to_thread(node.admin.wait_for_shovel, shovel.vhost, shovel.name, timeout=60)


async def cut_link(run: ClusterRun, proxies: dict[int, TcpProxy]) -> None:
    cut = sum([await proxy.cut(refuse=True) for proxy in proxies.values()])
    run.note(f"TJ->RU link cut on all {len(proxies)} nodes ({cut} connection(s)), refused for 6 s")
    await asyncio.sleep(6)
    for proxy in proxies.values():
        proxy.restore()
    run.note("TJ->RU link restored")


@pytest_asyncio.fixture
async def proxies(cluster: ChaosCluster) -> AsyncIterator[dict[int, TcpProxy]]:
    async with AsyncExitStack() as stack:
        yield {
            node.amqp_port: await stack.enter_async_context(
                TcpProxy(upstream_host="127.0.0.1", upstream_port=node.amqp_port)
            )
            for node in cluster.nodes
        }


async def test_cluster_loses_duplicates_and_invents_nothing(
    cluster: ChaosCluster, cluster_exchange: ChaosExchange, proxies: dict[int, TcpProxy], tmp_path: Path
) -> None:
    exchange = cluster_exchange
    await exchange.empty_queues()
    for vhost in (exchange.vhost("TJ"), exchange.vhost("RU")):
        assert len(await asyncio.to_thread(cluster.members_of, vhost, "inbound")) == len(cluster.nodes)
    directions = [
        Direction(
            name=f"{source}->{target}",
            sender_state=tmp_path / source.lower(),
            receiver_state=tmp_path / target.lower(),
            subscriber_ledger=tmp_path / f"{target.lower()}-consulate.sqlite",
        )
        for source, target in (("TJ", "RU"), ("RU", "TJ"))
    ]
    await route_link_through(exchange, proxies, "TJ")
    run = ClusterRun(exchange=exchange, workdir=tmp_path)
    supervisor: asyncio.Task[None] | None = None
    try:
        for subscriber in run.subscribers.values():
            await subscriber.start()
        for country in ("TJ", "RU"):
            first, second = run.gateways[country]
            await first.start()
            await until(lambda c=country, w=first: run.active(c) is w, what=f"{country} gateway a active")
            await second.start()  # the standby
        supervisor = asyncio.create_task(run.supervise())
        deadline = time.monotonic() + 90
        while any(progress(direction)[0] < 20 for direction in directions):
            assert time.monotonic() < deadline, "the gateways did not start sending"
            await asyncio.sleep(0.5)
        run.started = time.monotonic()

        first_down = await node_down_and_up(run, cluster, "RU", avoid=None)
        await node_down_and_up(run, cluster, "TJ", avoid=first_down)
        await kill_active_gateway(run, "TJ")
        await cut_link(run, proxies)

        settle_by = time.monotonic() + SETTLE_TIMEOUT_S
        while time.monotonic() < settle_by:
            if all(progress(d) == (MESSAGES, MESSAGES, MESSAGES) for d in directions):
                break
            await asyncio.sleep(1)
    finally:
        if supervisor is not None:
            supervisor.cancel()
        await run.stop()
        for node in cluster.nodes:
            await asyncio.to_thread(node.ctl, "start_app", check=False)
        await asyncio.to_thread(exchange.restore_shovels)
    verdicts = [classify(direction) for direction in directions]
    report = {
        "messages_per_direction": MESSAGES,
        "nodes": len(cluster.nodes),
        "seconds": round(time.monotonic() - run.started),
        "takeover_s": None if run.takeover_s is None else round(run.takeover_s, 1),
        "faults": run.faults,
        "directions": [verdict.as_dict() for verdict in verdicts],
        "lost": sum(v.lost for v in verdicts),
        "duplicated": sum(v.duplicated for v in verdicts),
        "unexpected": sum(v.unexpected for v in verdicts),
    }
    print("\ncluster chaos run:", json.dumps(report, indent=2))
    if target := os.environ.get("CHAOS_REPORT"):
        await asyncio.to_thread(Path(target).write_text, json.dumps(report, indent=2) + "\n", "utf-8")
    assert [v.sent for v in verdicts] == [MESSAGES, MESSAGES]
    assert [v.audit_outbox_mismatch for v in verdicts] == [0, 0]
    assert (report["lost"], report["duplicated"], report["unexpected"]) == (0, 0, 0), report
