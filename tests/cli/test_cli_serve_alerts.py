"""`broker subscribe` and `broker adapt render` stop after --count alerts, each handled once."""

from __future__ import annotations

from datetime import datetime, timedelta

from broker.cli.common import serve_alerts
from broker.core.agreement import Agreement
from broker.core.catalogue import sample_payloads
from broker.core.sealing import seal
from broker.core.trust import TrustStore
from broker.exchange.fake_transport import FakeTransport
from broker.exchange.subscriber import Alert, Subscription
from broker.exchange.topology import DELIVERY, delivery_routing_key, vhost_declarations
from broker.state.keystore import KeyStore


async def test_serving_stops_after_count_and_leaves_the_rest_queued(
    dev_pki: KeyStore, trust: TrustStore, agreement: Agreement, pki_now: datetime
) -> None:
    transport = FakeTransport(name="tj")
    await transport.declare(vhost_declarations("tj", ["ru"]))
    moment = pki_now + timedelta(days=1)
    signer = dev_pki.signer("RU-MINTRUD", at=moment)
    subscription = Subscription(
        transport=transport,
        agreement=agreement,
        trust=trust,
        authority_id="TJ-CONSULATE-MOSCOW",
        types=["legislation.change"],
    )
    await subscription.declare()
    sent = []
    for _ in range(3):
        sealed = seal(
            sample_payloads()["legislation.change"],
            sender="RU-MINTRUD",
            recipient="TJ-MOL",
            signer=signer,
            created_at=moment,
        )
        sent.append(sealed.envelope.id)
        await transport.publish(
            exchange=DELIVERY,
            routing_key=delivery_routing_key("legislation.change", None),
            body=sealed.raw,
            message_id=str(sealed.envelope.id),
        )
    shown: list[Alert] = []

    async def keep(alert: Alert) -> None:
        shown.append(alert)

    await serve_alerts(subscription, keep, count=2)
    assert [a.message_id for a in shown] == sent[:2]
    assert (await transport.queue_counts(subscription.queue))[0] == 1
