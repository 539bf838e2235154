"""Re-sends during a link outage: no copy piles up behind another, and the schedule backs off.

Issue 17 item 3: during an outage every overdue message used to be re-published into the local
`outbound.<peer>` queue at each deadline, and every copy was carried and verified when the link
came back (200 messages became 600 copies in a 75 s outage with 30 s deadlines). Now a message is not
published again while its earlier copy is still waiting in that queue, and each re-send waits
twice as long as the one before, up to `resend_backoff_max_s`.

The first test drives a gateway over the in-memory broker with a stepped clock; the second is the
measurement of docs/reliability.md: a 2-hour outage of the real RabbitMQ link (the shovel deleted),
5-minute deadlines, on a clock the test moves forward, then the link restored.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from broker.audit import EntryKind
from broker.audit.stores.sqlite import SqliteAuditStore
from broker.core.agreement import Agreement
from broker.core.catalogue.samples import sample_payloads
from broker.core.trust import TrustStore
from broker.exchange.rabbit_admin import RabbitAdmin
from broker.exchange.topology import outbound_queue, shovel_name
from broker.state.keystore import KeyStore
from broker.state.outbox import SendState
from tests.support.audit_run import build_side
from tests.support.exchange import ExchangeHarness

DEATH_DEADLINE = timedelta(minutes=5)  # the default receipt deadline of worker.death
OUTAGE = timedelta(hours=2)
STEP = timedelta(seconds=30)  # how far the clock moves between two resend checks


class MovedClock:
    """Real time plus an offset the test moves forward (each reading also a microsecond later, so
    no two entries share a time)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._base = start
        self.offset = timedelta()
        self._readings = 0

    def __call__(self) -> datetime:
        self._readings += 1
        base = self._base or datetime.now(UTC)
        return base + self.offset + timedelta(microseconds=self._readings)

    def advance(self, by: timedelta) -> None:
        self.offset += by


async def test_a_copy_still_queued_is_not_published_again_and_resends_back_off(
    tmp_path: Path, dev_pki: KeyStore, agreement: Agreement, trust: TrustStore, pki_now: datetime
) -> None:
    clock = MovedClock(pki_now + timedelta(days=30))
    store = await SqliteAuditStore.open(tmp_path / "ru.sqlite")
    ru = await build_side(
        "RU", store=store, state_dir=tmp_path / "ru", keys=dev_pki, agreement=agreement, trust=trust,
        clock=clock, at=pki_now + timedelta(days=30), settings={"resend_check_interval_s": 3600},
    )  # fmt: skip
    outbound = outbound_queue("tj")
    await ru.gateway.start()
    try:
        sent = [
            await ru.gateway.send(sample_payloads()["worker.death"], to="TJ-MOL", sender="RU-MVD")
            for _ in range(3)
        ]
        # Two hours with nothing carrying outbound.tj: every copy waits there, none is added.
        for _ in range(OUTAGE // STEP):
            clock.advance(STEP)
            assert await ru.gateway.resend_overdue() == 0
        assert await ru.transport.queue_counts(outbound) == (3, 0)
        for result in sent:
            record = await ru.gateway.outbox.get(result.message_id)
            assert record is not None
            assert record.attempts == 1
        held = ru.gateway.metrics.registry.get_sample_value(
            "exchange_resend_held_total", {"type": "worker.death"}
        )
        assert held is not None
        assert held >= 3 * (OUTAGE // DEATH_DEADLINE - 1)

        # The link carries them, and the peer never answers: each re-send waits twice as long.
        resent_at: list[timedelta] = []
        for _ in range(timedelta(hours=5) // STEP):
            await ru.transport.purge(outbound)
            clock.advance(STEP)
            if await ru.gateway.resend_overdue():
                resent_at.append(clock.offset)
        gaps = [later - earlier for earlier, later in itertools.pairwise(resent_at)]
        expected = [DEATH_DEADLINE * 2, DEATH_DEADLINE * 4, DEATH_DEADLINE * 8, timedelta(hours=1)]
        assert len(gaps) >= len(expected) + 1, resent_at
        for gap, wanted in zip(gaps, [*expected, timedelta(hours=1)], strict=False):
            assert wanted <= gap <= wanted + STEP, (gaps, expected)
    finally:
        await ru.gateway.stop()
        await ru.transport.close()
        ru.gateway.outbox.close()
        await store.close()


@pytest.mark.rabbitmq
async def test_a_two_hour_outage_carries_each_death_notice_at_most_twice(exchange: ExchangeHarness) -> None:
    messages = 200
    dev = exchange.dev
    ru_vhost = dev.brokers["RU"].vhost
    link = shovel_name("ru", "tj")
    [spec] = [shovel for plan in dev.plans for shovel in plan.shovels if shovel.name == link]
    clock = MovedClock()
    # TJ sees RU's countersignatures dated two hours ahead: its skew window allows for that.
    await exchange.new_gateway("TJ", max_clock_skew_s=4 * 3600)
    russia = await exchange.new_gateway("RU", clock=clock, resend_check_interval_s=3600)
    admin = RabbitAdmin()
    with capture_logs() as logs:
        try:
            await asyncio.to_thread(admin.delete_shovel, ru_vhost, link)  # the link to TJ is down
            death = sample_payloads()["worker.death"]
            sent = [
                (await russia.send(death, to="TJ-MOL", sender="RU-MVD")).message_id for _ in range(messages)
            ]
            for _ in range(OUTAGE // STEP):
                clock.advance(STEP)
                await russia.resend_overdue()
            queued = await exchange.ready("RU", outbound_queue("tj"))
            await asyncio.to_thread(admin.ensure_shovel, spec, dev.passwords)  # the link is back
            await asyncio.to_thread(admin.wait_for_shovel, ru_vhost, link)

            async def all_receipted() -> bool:
                await russia.resend_overdue()  # the clock runs on at real pace from here
                records = [await russia.outbox.get(message_id) for message_id in sent]
                return all(r is not None and r.state is SendState.RECEIPTED for r in records)

            await exchange.wait_until(all_receipted, what="a receipt for every death notice", timeout_s=120)
        finally:
            await asyncio.to_thread(admin.ensure_shovel, spec, dev.passwords)
            admin.close()

    copies_published: Counter[int] = Counter()
    for message_id in sent:
        record = await russia.outbox.get(message_id)
        assert record is not None
        copies_published[record.attempts] += 1
    wanted = {str(message_id) for message_id in sent}
    arrivals = Counter(
        event["message_id"]
        for event in logs
        if event["event"] in ("message.accepted", "message.duplicate") and event.get("message_id") in wanted
    )
    receipt_entries = [
        entry async for entry in russia.audit.entries() if entry.kind is EntryKind.RECEIPT_RECEIVED
    ]
    print(  # the figures docs/reliability.md quotes
        f"\n{messages} death notices, {OUTAGE} outage, {DEATH_DEADLINE} deadline: {queued} copies queued "
        f"at the end of the outage; copies published per message {dict(copies_published)}; copies "
        f"carried per message {dict(Counter(arrivals.values()))}; {len(receipt_entries)} receipt "
        f"entries in RU's log"
    )
    assert queued == messages  # one copy each waited out the outage
    assert set(arrivals) == wanted
    assert max(arrivals.values()) <= 2
    assert max(copies_published) <= 2
