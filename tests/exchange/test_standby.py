"""Two `broker gateway` processes for one country: one active, one standby, and the takeover.

Both RU gateways run as real processes (`broker gateway`, the command a service manager starts) on one
state folder, so they contend for the same audit log, outbox and writer lock (`gateway.lock`). The
test waits for the first to say `active` on `/readyz` before starting the second, so which one is the
standby is known. Tajikistan's side is a gateway in the test process, or sealed bytes published
straight into Russia's `inbound` as the shovel would.

Ground truth afterwards is on disk: Russia's audit log (received, delivered and receipt-sent entries
per message id) and Tajikistan's outbox (receipted or not).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import asyncpg
import httpx
import pytest
import pytest_asyncio

from broker.audit import EntryKind
from broker.core.catalogue.samples import sample_payloads
from broker.exchange.topology import INBOUND
from broker.exchange.transport import RabbitTransport
from broker.state.outbox import SendState
from tests.support.audit_logs import PG_DSN
from tests.support.exchange import ExchangeHarness
from tests.support.http_api import sealed_by

pytestmark = pytest.mark.rabbitmq

BROKER_CLI = Path(sys.executable).parent / "broker"
# A standby tries the lock this often: the takeover is bounded by it plus the gateway's start-up.
POLL_S = 0.5
START_TIMEOUT_S = 60.0
TYPE = "labour_market.report"  # Art. 3.3, no personal data: the test is about delivery, not sealing


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class GatewayProcess:
    """`broker gateway --country RU` on the test's state folder, its status port and its JSON log."""

    def __init__(self, exchange: ExchangeHarness, name: str, *, audit_dsn: str | None = None) -> None:
        self.port = free_port()
        self.log = exchange.state_dir / f"{name}.log"
        config = exchange.dev.settings["RU"].state_dir / "ru" / "gateway.toml"
        self._argv = [str(BROKER_CLI), "gateway", "--country", "RU", "--config", str(config)]
        self._env = {
            **os.environ,
            "EXCHANGE_STATE_DIR": str(exchange.state_dir),
            "EXCHANGE_METRICS_PORT": str(self.port),
            "EXCHANGE_STANDBY_POLL_S": str(POLL_S),
            "EXCHANGE_LOG_FORMAT": "json",
            # PostgreSQL: the log, and so the writer lock, in a database of the test's own.
            **({"EXCHANGE_AUDIT_BACKEND": "postgres", "EXCHANGE_AUDIT_DSN": audit_dsn} if audit_dsn else {}),
        }
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as output:
            self.process = await asyncio.create_subprocess_exec(
                *self._argv, env=self._env, stdout=output, stderr=output
            )

    async def readyz(self) -> tuple[int, dict[str, Any]] | None:
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                response = await client.get(f"http://127.0.0.1:{self.port}/readyz")
        except httpx.HTTPError:
            return None  # not listening yet
        body: dict[str, Any] = response.json()
        return response.status_code, body

    async def role(self) -> str | None:
        answer = await self.readyz()
        return None if answer is None else answer[1].get("role")

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == name:
                    found.append(record)
        return found

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(30):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def active_and_standby(
    exchange: ExchangeHarness, *, audit_dsn: str | None = None
) -> tuple[GatewayProcess, GatewayProcess]:
    """Start two RU gateways; the first is active before the second starts."""
    first = GatewayProcess(exchange, "ru-first", audit_dsn=audit_dsn)
    second = GatewayProcess(exchange, "ru-second", audit_dsn=audit_dsn)
    await first.start()

    async def first_active() -> bool:
        return await first.role() == "active"

    await exchange.wait_until(
        first_active, what="the first RU gateway to be active", timeout_s=START_TIMEOUT_S
    )
    await second.start()

    async def second_standby() -> bool:
        return await second.role() == "standby"

    await exchange.wait_until(
        second_standby, what="the second RU gateway to wait as standby", timeout_s=START_TIMEOUT_S
    )
    return first, second


async def russian_log(exchange: ExchangeHarness, audit_dsn: str | None = None) -> dict[str, Counter[UUID]]:
    """Per entry kind, how many entries each message id has in Russia's audit log."""
    rows: list[tuple[str, object]]
    if audit_dsn is not None:
        connection = await asyncpg.connect(audit_dsn)
        try:
            found = await connection.fetch(
                "SELECT kind, message_id FROM audit_ru.audit_entries "
                "WHERE message_type = $1 OR kind = 'receipt-sent'",
                TYPE,
            )
        except asyncpg.UndefinedTableError:
            found = []  # the gateway has not made its schema yet
        finally:
            await connection.close()
        rows = [(record["kind"], record["message_id"]) for record in found]
    else:
        path = exchange.state_dir / "ru" / "audit.sqlite"
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            rows = db.execute(
                "SELECT kind, message_id FROM audit_entries WHERE message_type IS ? OR kind = 'receipt-sent'",
                (TYPE,),
            ).fetchall()
    counts: dict[str, Counter[UUID]] = {}
    for kind, message_id in rows:
        if message_id is not None:
            counts.setdefault(kind, Counter())[UUID(str(message_id))] += 1
    return counts


@pytest_asyncio.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def audit_dsn(request: pytest.FixtureRequest) -> AsyncIterator[str | None]:
    """None for the SQLite log (and its file lock); else a PostgreSQL database of this test's own,
    so the advisory lock and the schema `audit_ru` are nobody else's."""
    if request.param == "sqlite":
        yield None
        return
    name = f"ha_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(PG_DSN)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield urlunsplit(urlsplit(PG_DSN)._replace(path=f"/{name}"))
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


def each_once(counts: Counter[UUID], ids: set[UUID]) -> tuple[set[UUID], set[UUID]]:
    """(missing, more than once) among `ids`."""
    return ids - set(counts), {message_id for message_id in ids if counts[message_id] > 1}


async def test_a_second_gateway_waits_as_standby_visibly_and_never_consumes(
    exchange: ExchangeHarness,
) -> None:
    first, second = await active_and_standby(exchange)
    try:
        answer = await second.readyz()
        assert answer is not None
        status, body = answer
        assert status == 503  # not ready to serve: the active one serves
        assert body["role"] == "standby"
        assert body["ready"] is False
        assert body["checks"]["writer_lock"]["ok"] is False
        assert "gateway.lock" in body["checks"]["writer_lock"]["detail"]
        assert "pid" in body["checks"]["writer_lock"]["detail"]  # who holds it
        [standby_line] = second.events("gateway.standby")
        assert standby_line["country"] == "RU"
        assert standby_line["level"] == "warning"
        assert second.events("gateway.active") == []
        assert first.events("gateway.active")
        assert not first.events("gateway.standby")

        # Only the active one consumes `inbound`: the broker counts one consumer.
        _, consumers = await exchange.broker["RU"].queue_counts(INBOUND)
        assert consumers == 1
    finally:
        await second.stop()
        await first.stop()


async def test_the_standby_takes_over_when_the_active_gateway_is_killed_losing_nothing(
    exchange: ExchangeHarness, audit_dsn: str | None
) -> None:
    messages = 200
    tajikistan = await exchange.new_gateway(
        "TJ", receipt_deadlines_s={"*": 5.0}, resend_check_interval_s=0.5, confirm_timeout_s=5.0
    )
    first, second = await active_and_standby(exchange, audit_dsn=audit_dsn)
    try:
        sent: list[UUID] = []

        async def send_all() -> None:
            for _ in range(messages):
                result = await tajikistan.send(sample_payloads()[TYPE], to="RU-MINTRUD", sender="TJ-MOL")
                sent.append(result.message_id)
                await asyncio.sleep(0.02)

        sending = asyncio.create_task(send_all())

        async def some_received() -> bool:
            return len((await russian_log(exchange, audit_dsn)).get("received", Counter())) >= messages // 3

        await exchange.wait_until(some_received, what="a third of the messages received", timeout_s=120)
        await first.kill()  # SIGKILL mid-stream: no clean-up, unacked messages go back to the queue
        killed_at = time.monotonic()

        async def second_serving() -> bool:
            answer = await second.readyz()
            return answer is not None and answer[0] == 200 and answer[1]["role"] == "active"

        await exchange.wait_until(second_serving, what="the standby to take over", timeout_s=START_TIMEOUT_S)
        takeover_s = time.monotonic() - killed_at
        await sending

        async def all_receipted() -> bool:
            records = await tajikistan.outbox.records(limit=10_000)
            return sum(1 for record in records if record.state is SendState.RECEIPTED) == messages

        await exchange.wait_until(all_receipted, what="every message receipted", timeout_s=180)
        log = await russian_log(exchange, audit_dsn)
        ids = set(sent)
        assert len(ids) == messages
        for kind in ("received", "delivered", "receipt-sent"):
            missing, twice = each_once(log.get(kind, Counter()), ids)
            assert (missing, twice) == (set(), set()), f"{kind}: missing {len(missing)}, twice {len(twice)}"
        # One receipt per message: a receipt sent again after the takeover is the same bytes.
        for message_id in ids:
            receipts = await tajikistan.audit.find(message_id, kinds=[EntryKind.RECEIPT_RECEIVED])
            assert len({entry.envelope for entry in receipts}) == 1, message_id
        assert second.events("gateway.standby")
        assert second.events("gateway.active")
        print(f"takeover after SIGKILL: {takeover_s:.1f} s until /readyz 200 (standby poll {POLL_S} s)")
    finally:
        await second.stop()
        await first.stop()


async def test_two_gateways_deliver_300_messages_published_twice_at_once_exactly_once(
    exchange: ExchangeHarness,
) -> None:
    """The issue's measurement: 300 messages, each published twice at once into RU's inbound (as a
    re-send or a redelivery looks), with two RU gateways running. Before the writer lock this gave 34
    messages delivered twice, each with two different receipts."""
    first, second = await active_and_standby(exchange)
    try:
        sealed = [sealed_by(exchange, TYPE, sender="TJ-MOL", recipient="RU-MINTRUD") for _ in range(300)]
        broker = exchange.broker["RU"]

        async def publish(message_index: int) -> None:
            message = sealed[message_index]
            await broker.publish(
                exchange=INBOUND, routing_key="ru", body=message.raw, message_id=str(message.envelope.id)
            )

        # Both copies of each message race each other.
        await asyncio.gather(*(publish(index) for index in range(300) for _ in range(2)))
        ids = {message.envelope.id for message in sealed}

        async def all_receipted() -> bool:
            return set((await russian_log(exchange)).get("receipt-sent", Counter())) >= ids

        await exchange.wait_until(all_receipted, what="a receipt for each of the 300", timeout_s=180)

        async def acked() -> bool:
            return await exchange.held("RU", INBOUND) == 0

        await exchange.wait_until(acked, what="RU's inbound acked empty", timeout_s=60)
        log = await russian_log(exchange)
        for kind in ("received", "delivered", "receipt-sent"):
            missing, twice = each_once(log.get(kind, Counter()), ids)
            assert (missing, twice) == (set(), set()), f"{kind}: missing {len(missing)}, twice {len(twice)}"
        delivered = Counter(
            UUID(message.message_id)
            for message in await broker.peek(exchange.ministry_queue("RU"), limit=1000)
            if message.message_id is not None
        )
        assert set(delivered) == ids
        assert max(delivered.values()) == 1
        assert await second.role() == "standby"  # it never took part
        assert second.events("gateway.active") == []
    finally:
        await second.stop()
        await first.stop()


async def test_an_active_gateway_that_loses_its_lock_stops_and_says_why(exchange: ExchangeHarness) -> None:
    """Someone removes the lock file under a running gateway: another process could now lock a new
    one, so this one must stop writing. It stops and exits 1 with one error line."""
    gateway = GatewayProcess(exchange, "ru-only")
    await gateway.start()
    try:

        async def active() -> bool:
            return await gateway.role() == "active"

        await exchange.wait_until(active, what="the RU gateway to be active", timeout_s=START_TIMEOUT_S)
        (exchange.state_dir / "ru" / "gateway.lock").unlink()

        assert gateway.process is not None
        async with asyncio.timeout(START_TIMEOUT_S):
            returncode = await gateway.process.wait()
        assert returncode == 1
        [lost] = gateway.events("gateway.writer_lost")
        assert lost["reason"] == "audit.writer_lost"
        output = gateway.log.read_text(encoding="utf-8")
        [line] = [line for line in output.splitlines() if line.startswith("error ")]
        assert line.startswith("error [audit.writer_lost] RU's gateway lost the audit log's writer lock")
        assert "Traceback" not in output
        assert gateway.events("gateway.stopped")  # it stopped consuming before it exited
    finally:
        await gateway.stop()


async def test_a_client_given_the_cluster_s_nodes_connects_to_one_that_answers(
    exchange: ExchangeHarness,
) -> None:
    """The first node named is down: the transport connects to the next (amqp_failover_hosts)."""
    live = exchange.dev.gateway_url("RU")
    dead = live.replace("127.0.0.1:5672", f"127.0.0.1:{free_port()}")
    assert dead != live
    transport = await RabbitTransport.connect(url=dead, name="ha-failover", failover=[live])
    try:
        assert await transport.queue_counts(INBOUND) == (0, 0)
    finally:
        await transport.close()
