"""Jepsen-style run: messages both ways while the broker, the link, a gateway and a subscriber fail.

Both gateways run as processes (as `broker gateway` does, plus the ministry's load), each with a
consulate subscriber process. While they exchange labour-market reports (Art. 3.3; they carry
no personal data, so the run measures delivery, not encryption) the test stops and
starts the RabbitMQ application, cuts the TJ → RU shovel's connection (it goes through a TCP proxy)
and refuses it for a while, SIGKILLs each gateway mid-batch and restarts it, and the subscribers kill
themselves after a delivery is recorded but before it is acked. Afterwards every message is
classified from the outboxes, the audit logs and the subscriber ledgers: lost, duplicated and
unexpected must all be zero.

Size: CHAOS_MESSAGES per direction (default 1000, so 2000 in all); CHAOS_REPORT names a JSON file
for the figures (docs/reliability.md quotes them).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from .conftest import CONSULATE, ChaosExchange
from .node import ChaosNode
from .processes import Worker
from .tcp_proxy import TcpProxy
from .verdict import Direction, classify, progress

pytestmark = [pytest.mark.chaos, pytest.mark.rabbitmq]

MESSAGES = int(os.environ.get("CHAOS_MESSAGES", "1000"))
RATE = 40.0  # new messages per second per side: the run lasts long enough for every fault
SETTLE_TIMEOUT_S = 240.0
# Every type has its own default deadline (minutes for a death): override the one we send too.
GATEWAY_ENV = {
    "EXCHANGE_RECEIPT_DEADLINES_S": json.dumps({"labour_market.report": 10, "*": 10}),
    "EXCHANGE_RESEND_CHECK_INTERVAL_S": "2",
    "EXCHANGE_CONFIRM_TIMEOUT_S": "5",
    "EXCHANGE_LOG_FORMAT": "json",
}
# Competent ministry to competent ministry; Russia has two, so the sender is named.
SENDER = {"TJ": "TJ-MOL", "RU": "RU-MINTRUD"}
RECIPIENT = {"TJ": "RU-MINTRUD", "RU": "TJ-MOL"}


async def route_shovel_through(proxy: TcpProxy, exchange: ChaosExchange, source: str) -> None:
    """Point the shovel leaving `source` at the proxy instead of the peer's broker."""
    dev, node = exchange.dev, exchange.node
    [shovel] = next(plan for plan in dev.plans if plan.broker.country == source.lower()).shovels
    definition = shovel.definition(dev.passwords)
    dest = urlsplit(definition["dest-uri"])
    netloc = dest.netloc.rsplit(":", 1)[0] + f":{proxy.port}"
    definition["dest-uri"] = urlunsplit((dest.scheme, netloc, dest.path, dest.query, ""))
    await asyncio.to_thread(
        node.ctl, "set_parameter", "-p", shovel.vhost, "shovel", shovel.name, json.dumps(definition)
    )
    await asyncio.to_thread(node.admin.wait_for_shovel, shovel.vhost, shovel.name, timeout=30)


class Run:
    """The processes of one run and the log of faults injected into them."""

    def __init__(self, *, exchange: ChaosExchange, workdir: Path) -> None:
        self.faults: list[str] = []
        self.started = time.monotonic()
        self.gateways: dict[str, Worker] = {}
        self.subscribers: dict[str, Worker] = {}
        for country in ("TJ", "RU"):
            config = str(exchange.write_config(country, workdir))
            self.gateways[country] = Worker(
                name=f"{country}-gateway",
                script="gateway_worker.py",
                arguments=["--country", country, "--config", config, "--send", str(MESSAGES),
                           "--sender", SENDER[country], "--to", RECIPIENT[country], "--rate", str(RATE)],
                env=GATEWAY_ENV,
                log=workdir / f"{country.lower()}-gateway.log",
            )  # fmt: skip
            self.subscribers[country] = Worker(
                name=f"{country}-subscriber",
                script="subscriber_worker.py",
                arguments=["--country", country, "--config", config, "--authority", CONSULATE[country],
                           "--ledger", str(workdir / f"{country.lower()}-consulate.sqlite")],
                env=GATEWAY_ENV,
                log=workdir / f"{country.lower()}-subscriber.log",
            )  # fmt: skip

    def note(self, fault: str) -> None:
        self.faults.append(f"t+{time.monotonic() - self.started:.0f}s {fault}")

    async def supervise(self) -> None:
        """Restart whatever exited: a subscriber that died before its ack, a gateway that found the
        broker down at start (a service manager would do the same)."""
        while True:
            for worker in [*self.subscribers.values(), *self.gateways.values()]:
                if worker.exited and not worker.held:
                    self.note(f"{worker.name} exited; restarted")
                    await worker.start()
            await asyncio.sleep(0.5)

    async def stop(self) -> None:
        await asyncio.gather(*(w.stop() for w in [*self.gateways.values(), *self.subscribers.values()]))


async def inject_faults(run: Run, node: ChaosNode, proxy: TcpProxy) -> None:
    async def at(second: float, fault: Callable[[], Awaitable[None]]) -> None:
        await asyncio.sleep(max(0.0, run.started + second - time.monotonic()))
        await fault()

    async def broker_restart() -> None:
        run.note("rabbitmqctl stop_app")
        await asyncio.to_thread(node.stop_app)
        await asyncio.sleep(4)
        await asyncio.to_thread(node.start_app)
        run.note("rabbitmqctl start_app")

    async def link_cut() -> None:
        cut = await proxy.cut(refuse=True)
        run.note(f"TJ->RU link cut ({cut} shovel connection(s)), refused for 6 s")
        await asyncio.sleep(6)
        proxy.restore()
        run.note("TJ->RU link restored")

    def gateway_kill(country: str) -> Callable[[], Awaitable[None]]:
        async def kill() -> None:
            worker = run.gateways[country]
            worker.held = True
            await worker.kill()
            run.note(f"{country} gateway SIGKILLed mid-batch")
            await asyncio.sleep(1)
            await worker.start()
            worker.held = False
            run.note(f"{country} gateway restarted")

        return kill

    await at(5, broker_restart)
    await at(14, link_cut)
    await at(21, gateway_kill("TJ"))
    await at(27, gateway_kill("RU"))


async def both_sides_sending(directions: list[Direction]) -> None:
    """Faults start once both gateways are up and sending (starting Python takes a while on CI)."""
    deadline = time.monotonic() + 60
    while any(progress(direction)[0] < 20 for direction in directions):
        assert time.monotonic() < deadline, "the gateways did not start sending"
        await asyncio.sleep(0.5)


async def wait_settled(run: Run, directions: list[Direction]) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        done = [progress(direction) for direction in directions]
        if all(state == (MESSAGES, MESSAGES, MESSAGES) for state in done):
            return
        await asyncio.sleep(1)


async def test_no_message_is_lost_duplicated_or_invented(exchange: ChaosExchange, tmp_path: Path) -> None:
    workdir = tmp_path
    directions = [
        Direction(
            name=f"{source}->{target}",
            sender_state=workdir / source.lower(),
            receiver_state=workdir / target.lower(),
            subscriber_ledger=workdir / f"{target.lower()}-consulate.sqlite",
        )
        for source, target in (("TJ", "RU"), ("RU", "TJ"))
    ]
    async with TcpProxy(upstream_host="127.0.0.1", upstream_port=exchange.node.amqp_port) as proxy:
        await route_shovel_through(proxy, exchange, "TJ")
        run = Run(exchange=exchange, workdir=workdir)
        for country in ("TJ", "RU"):
            await run.subscribers[country].start("--die-after", str(MESSAGES // 4))
        for worker in run.gateways.values():
            await worker.start()
        supervisor = asyncio.create_task(run.supervise())
        try:
            await both_sides_sending(directions)
            run.started = time.monotonic()
            await inject_faults(run, exchange.node, proxy)
            await wait_settled(run, directions)
        finally:
            supervisor.cancel()
            await run.stop()
            await asyncio.to_thread(exchange.node.ctl, "start_app", check=False)
            await asyncio.to_thread(exchange.restore_shovels)
    verdicts = [classify(direction) for direction in directions]
    report = {
        "messages_per_direction": MESSAGES,
        "seconds": round(time.monotonic() - run.started),
        "faults": run.faults,
        "directions": [verdict.as_dict() for verdict in verdicts],
        "lost": sum(v.lost for v in verdicts),
        "duplicated": sum(v.duplicated for v in verdicts),
        "unexpected": sum(v.unexpected for v in verdicts),
    }
    print("\nchaos run:", json.dumps(report, indent=2))  # CI shows the counts
    if target := os.environ.get("CHAOS_REPORT"):
        await asyncio.to_thread(Path(target).write_text, json.dumps(report, indent=2) + "\n", "utf-8")
    assert len(run.faults) >= 6, run.faults
    assert all(worker.starts >= 2 for worker in run.subscribers.values()), "each consulate died once"
    assert [v.sent for v in verdicts] == [MESSAGES, MESSAGES]
    assert [v.audit_outbox_mismatch for v in verdicts] == [0, 0]
    assert (report["lost"], report["duplicated"], report["unexpected"]) == (0, 0, 0), report
    await assert_audit_logs_verify(exchange, workdir)


def _audit_stores(workdir: Path) -> dict[str, Path]:
    return {country: next(workdir.rglob(f"{country.lower()}/audit.sqlite")) for country in ("TJ", "RU")}


async def assert_audit_logs_verify(exchange: ChaosExchange, workdir: Path) -> None:
    """After every SIGKILL, each side's log still verifies as an auditor would check it."""
    stores = await asyncio.to_thread(_audit_stores, workdir)
    keys = exchange.settings("TJ", workdir / "verify").keys_dir
    broker_cli = Path(sys.executable).parent / "broker"
    for country, store in stores.items():
        peer = stores["RU" if country == "TJ" else "TJ"]
        process = await asyncio.create_subprocess_exec(
            str(broker_cli), "audit", "verify", "--store", str(store), "--keys", str(keys),
            "--witness-store", str(peer), "--no-progress",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await process.communicate()
        assert process.returncode == 0, f"{country} log: {output.decode(errors='replace')[-2000:]}"
