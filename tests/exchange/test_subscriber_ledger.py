"""A subscriber that crashed between its handler and the ack does not show the alert twice."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

from broker.core.agreement import Agreement
from broker.core.catalogue import sample_payloads
from broker.core.sealing import SealedMessage, seal
from broker.core.trust import TrustStore
from broker.exchange.fake_transport import FakeTransport
from broker.exchange.subscriber import Alert, HandledLedger, Subscription
from broker.exchange.topology import DELIVERY, delivery_routing_key, vhost_declarations
from broker.state.keystore import KeyStore


async def test_redelivered_alert_is_not_handed_over_again_after_a_restart(
    tmp_path: Path, dev_pki: KeyStore, trust: TrustStore, agreement: Agreement, pki_now: datetime
) -> None:
    transport = FakeTransport(name="tj")
    await transport.declare(vhost_declarations("tj", ["ru"]))
    moment = pki_now + timedelta(days=1)
    signer = dev_pki.signer("RU-MINTRUD", at=moment)

    def notice() -> SealedMessage:
        payload = sample_payloads()["legislation.change"]
        return seal(payload, sender="RU-MINTRUD", recipient="TJ-MOL", signer=signer, created_at=moment)

    async def deliver(sealed: SealedMessage) -> None:
        await transport.publish(
            exchange=DELIVERY,
            routing_key=delivery_routing_key("legislation.change", None),
            body=sealed.raw,
            message_id=str(sealed.envelope.id),
        )

    def subscription(ledger: HandledLedger) -> Subscription:
        return Subscription(
            transport=transport,
            agreement=agreement,
            trust=trust,
            authority_id="TJ-CONSULATE-MOSCOW",
            types=["legislation.change"],
            ledger=ledger,
        )

    first_alert, second_alert = notice(), notice()
    ledger = HandledLedger(tmp_path / "subscriber.sqlite")
    before_crash = subscription(ledger)
    await before_crash.declare()
    await deliver(first_alert)
    assert [a.message_id for a in await before_crash.collect(1, timeout_s=5)] == [first_alert.envelope.id]
    ledger.close()

    # The broker hands the first alert over again (its ack died with the process), then a new one.
    await deliver(first_alert)
    await deliver(second_alert)
    ledger = HandledLedger(tmp_path / "subscriber.sqlite")
    after_restart = subscription(ledger)
    shown: list[Alert] = []
    second_seen = asyncio.Event()

    async def keep(alert: Alert) -> None:
        shown.append(alert)
        if alert.message_id == second_alert.envelope.id:
            second_seen.set()

    handle = await after_restart.run(keep)
    async with asyncio.timeout(5):
        await second_seen.wait()
    await handle.cancel()
    ledger.close()
    assert [a.message_id for a in shown] == [second_alert.envelope.id]
    assert (await transport.queue_counts(after_restart.queue))[0] == 0
