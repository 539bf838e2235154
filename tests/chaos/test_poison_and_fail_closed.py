"""Poison messages and an unavailable audit store, on a real broker.

Poison: a message that makes the gateway crash is retried a bounded number of times, then rejected
as `handler.crashed`: audited with its bytes, copied to quarantine, answered with a negative receipt,
and the messages queued behind it are accepted meanwhile.

Fail closed: while the audit store refuses writes, the gateway acks nothing (every message stays on
the broker, none goes to quarantine); when the store is back, every message is accepted once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from broker.audit import EntryKind
from broker.core.catalogue import Payload, citizenship_of
from broker.core.catalogue.labour_market import LabourMarketReport
from broker.core.errors import AuditError, Reason
from broker.core.sealing import SealedMessage
from broker.exchange.gateway import Gateway, gateway_from_settings
from broker.exchange.topology import DELIVERY_LIMIT
from broker.exchange.transport import RabbitTransport

from .conftest import ChaosExchange
from .helpers import eventually, put_in_tj_inbound, queue_state, report_from_russia

pytestmark = [pytest.mark.chaos, pytest.mark.rabbitmq]

POISON = "POISON: this text trips a bug in the delivery step"


async def kinds_of(gateway: Gateway, message_id: Any) -> list[str]:
    return [str(entry.kind) for entry in await gateway.trail(message_id)]


async def test_poison_is_quarantined_after_bounded_deliveries_and_audited(
    exchange: ChaosExchange, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[str] = []

    def crashing_citizenship_of(payload: Payload) -> str | None:
        if isinstance(payload, LabourMarketReport) and payload.living_conditions == POISON:
            attempts.append("crash")
            raise RuntimeError("a bug this payload triggers")
        return citizenship_of(payload)

    monkeypatch.setattr("broker.exchange.gateway.receiving.citizenship_of", crashing_citizenship_of)
    poison = report_from_russia(exchange, living_conditions=POISON)
    behind = [report_from_russia(exchange) for _ in range(5)]
    await put_in_tj_inbound(exchange, [poison, *behind])

    async with Gateway.from_settings(exchange.settings("TJ", tmp_path)) as tj:

        async def poison_rejected() -> bool:
            return "rejected" in await kinds_of(tj, poison.envelope.id)

        async def behind_received() -> bool:
            trails = [await kinds_of(tj, message.envelope.id) for message in behind]
            return all("received" in kinds for kinds in trails)

        await eventually(poison_rejected, seconds=60)
        await eventually(behind_received, seconds=30)
        [rejected] = [e for e in await tj.trail(poison.envelope.id) if e.kind == EntryKind.REJECTED]

    assert rejected.reason == str(Reason.HANDLER_CRASHED)
    assert rejected.envelope == poison.raw
    assert len(attempts) == DELIVERY_LIMIT
    assert (await queue_state(exchange, "TJ", "inbound"))["ready"] == 0
    peer = await RabbitTransport.connect(url=exchange.dev.gateway_url("TJ"), name="chaos-quarantine-check")
    try:
        [quarantined] = await peer.peek("quarantine")
    finally:
        await peer.close()
    assert quarantined.body == poison.raw
    assert quarantined.headers["x-reason"] == str(Reason.HANDLER_CRASHED)


class StoreOutage:
    """Stands in for every write of the audit store: refused while `down`, like a disk that went away."""

    def __init__(self) -> None:
        self.down = True
        self.refused = 0

    def wrap(self, real: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def write(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                self.refused += 1
                raise AuditError(Reason.AUDIT_UNAVAILABLE, "audit database error: disk I/O error")
            return await real(*args, **kwargs)

        return write


async def test_the_gateway_acks_nothing_while_its_audit_store_is_down(
    exchange: ChaosExchange, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = [report_from_russia(exchange) for _ in range(20)]
    await put_in_tj_inbound(exchange, messages)

    tj = await gateway_from_settings(exchange.settings("TJ", tmp_path))
    outage = StoreOutage()
    for write in ("append", "append_first"):  # every way an entry is written; before the consumer starts
        monkeypatch.setattr(tj.audit, write, outage.wrap(getattr(tj.audit, write)))
    try:
        await held_then_released(exchange, tj, outage, messages)
    finally:
        await tj.close()

    async def inbound_drained() -> bool:
        inbound = await queue_state(exchange, "TJ", "inbound")
        return inbound["ready"] + inbound["unacked"] == 0

    await eventually(inbound_drained, seconds=20)
    assert (await queue_state(exchange, "TJ", "quarantine"))["ready"] == 0


async def held_then_released(
    exchange: ChaosExchange, tj: Gateway, outage: StoreOutage, messages: list[SealedMessage]
) -> None:
    async with tj:

        async def all_refused_at_least_twice() -> bool:
            return outage.refused >= 2 * len(messages)

        await eventually(all_refused_at_least_twice, seconds=30)

        async def all_still_on_the_broker() -> bool:
            # rabbitmqctl's queue figures lag the queue by a few seconds: wait for them to settle.
            inbound = await queue_state(exchange, "TJ", "inbound")
            return inbound["ready"] + inbound["unacked"] == len(messages)

        await eventually(all_still_on_the_broker, seconds=20)
        assert (await queue_state(exchange, "TJ", "quarantine"))["ready"] == 0
        assert await tj.audit.size() == 0

        outage.down = False

        async def all_received() -> bool:
            for message in messages:
                if "received" not in await kinds_of(tj, message.envelope.id):
                    return False
            return True

        await eventually(all_received, seconds=60)
        for message in messages:
            assert (await kinds_of(tj, message.envelope.id)).count("received") == 1
