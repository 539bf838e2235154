"""Countersignatures handed back over the real RabbitMQ and its shovels (issue 4, "Checkpoints").

Each receipt carries the receiver's signed checkpoint; the sender countersigns it and sends the
countersignature back as a `checkpoint.witness` message, which the checkpoint's origin keeps in its
own log once it matches that log. A countersignature of a root the log does not have is an alarm:
rejected, quarantined and audited, never receipted. Nothing answers a witness message, so traffic
falls quiet when the ministries stop sending.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID

import pytest

from broker.audit import AuditEntry, EntryKind
from broker.audit.checkpoint import CheckpointBody, cosign, sign_checkpoint
from broker.audit.receipt_refs import RECEIPT_KINDS, batch_of
from broker.audit.reconcile import digest, reconcile
from broker.audit.verify import verify_log
from broker.audit.witnessing import WITNESS_TYPE, countersigned_record, seal_witness
from broker.core.catalogue import sample_payloads
from broker.core.catalogue.witness import CheckpointWitness
from broker.core.envelope import sha256_hex
from broker.core.errors import Reason
from broker.core.sealing import SealedMessage, open_message
from broker.exchange.gateway import Gateway
from broker.exchange.topology import INBOUND, QUARANTINE, outbound_queue

if TYPE_CHECKING:
    from tests.support.exchange import ExchangeHarness

pytestmark = pytest.mark.rabbitmq

RECEIPT_WAIT_S = 20.0
COUNTRIES = ("TJ", "RU")


async def log_of(gateway: Gateway) -> list[AuditEntry]:
    return [entry async for entry in gateway.audit.entries()]


def witness_entries(log: list[AuditEntry], kind: EntryKind) -> list[AuditEntry]:
    return [entry for entry in log if entry.kind is kind and entry.message_type == WITNESS_TYPE]


async def traffic(gateways: dict[str, Gateway]) -> dict[str, Counter[str]]:
    """Per country, how many entries of each kind (witness messages counted apart)."""
    counts: dict[str, Counter[str]] = {}
    for country, gateway in gateways.items():
        counts[country] = Counter(
            f"{entry.kind}:{'witness' if entry.message_type == WITNESS_TYPE else 'other'}"
            for entry in await log_of(gateway)
            # A batched receipt counts once per message it answers: its reference entries.
            if not (entry.kind in RECEIPT_KINDS and batch_of(entry.envelope) is not None)
        )
    return counts


async def countersignatures_landed(gateways: dict[str, Gateway]) -> bool:
    """Every countersignature made was sent back and logged by the side it vouches for."""
    counts = await traffic(gateways)
    for country, peer in (("TJ", "RU"), ("RU", "TJ")):
        made, sent = counts[country]["witness:other"], counts[country]["sent:witness"]
        if not made or made != sent or sent != counts[peer]["received:witness"]:
            return False
    return True


async def idle(exchange: ExchangeHarness) -> bool:
    """No message waiting or unacknowledged in either country's inbound and outbound queues."""
    for country in COUNTRIES:
        for queue in (INBOUND, outbound_queue(exchange.peer_of(country).lower())):
            if await exchange.held(country, queue):
                return False
    return True


async def exchange_some_messages(gateways: dict[str, Gateway]) -> None:
    """Two rounds of one message each way, every one waiting for its receipt."""
    samples = sample_payloads()
    for tajik, russian in (
        ("legislation.change", "worker.death"),
        ("employer.permit", "work_permit.cancellation"),
    ):
        results = await asyncio.gather(
            gateways["TJ"].send(samples[tajik], to="RU-MINTRUD", sender="TJ-MOL",
                                wait_receipt=True, receipt_timeout_s=RECEIPT_WAIT_S),
            gateways["RU"].send(samples[russian], to="TJ-MOL", sender="RU-MVD",
                                wait_receipt=True, receipt_timeout_s=RECEIPT_WAIT_S),
        )  # fmt: skip
        assert all(result.receipt is not None for result in results)


async def test_each_log_keeps_the_peers_countersignatures_of_its_own_checkpoints_then_falls_quiet(
    exchange: ExchangeHarness, gateways: dict[str, Gateway]
) -> None:
    await exchange_some_messages(gateways)
    await exchange.wait_until(
        lambda: countersignatures_landed(gateways),
        what="every countersignature logged by the side it vouches for",
        timeout_s=RECEIPT_WAIT_S,
    )

    logs = {country: await log_of(gateway) for country, gateway in gateways.items()}
    for country in COUNTRIES:
        gateway, peer = gateways[country], gateways[exchange.peer_of(country)]
        received = witness_entries(logs[country], EntryKind.RECEIVED)
        sent_by_peer = {
            entry.envelope for entry in witness_entries(logs[exchange.peer_of(country)], EntryKind.SENT)
        }
        peer_witness = {e.envelope for e in logs[exchange.peer_of(country)] if e.kind is EntryKind.WITNESS}
        assert received
        for entry in received:
            assert entry.envelope in sent_by_peer  # the exact bytes the peer sent and audited
            assert entry.verdict == "accepted"
            opened = open_message(
                entry.envelope, trust=exchange.trust, agreement=exchange.dev.agreement, local_country=country
            )
            assert isinstance(opened.payload, CheckpointWitness)
            record = countersigned_record(
                opened.payload, sender=peer.gateway_id, origin=gateway.gateway_id, trust=exchange.trust
            )
            assert record.to_bytes() in peer_witness  # what the peer keeps as its WITNESS entry
            size = record.checkpoint.body.tree_size
            assert record.checkpoint.body.root_hash == await gateway.audit.root(size)
        # The auditor's check of the whole log, countersignatures held in it included.
        report = verify_log(logs[country], trust=exchange.trust)
        assert report.ok, report.finding
        assert report.countersigned == len(received)
    assert reconcile(digest("TJ", logs["TJ"]), digest("RU", logs["RU"])) == []

    # No ping-pong: nothing answers a witness message, so the traffic stops with the ministries.
    await exchange.wait_until(lambda: idle(exchange), what="both links and inbound queues idle")
    settled = await traffic(gateways)
    for country in COUNTRIES:
        counts = settled[country]
        assert counts["receipt-sent:other"] == counts["received:other"]  # none for a witness message
        assert counts["sent:witness"] <= counts["receipt-received:other"]  # one per new checkpoint at most
    await asyncio.sleep(2.0)  # two rounds of each checkpointer's timer: time for a loop to show
    assert await idle(exchange)
    assert await traffic(gateways) == settled


def forged_witness(exchange: ExchangeHarness, *, size: int, root: bytes) -> SealedMessage:
    """RU-GW's real keys countersigning a TJ-GW checkpoint of `size` entries with root `root`."""
    now = datetime.now(UTC)
    keys = exchange.dev.keystore
    checkpoint = sign_checkpoint(
        CheckpointBody(origin="TJ-GW", tree_size=size, root_hash=root, time=now - timedelta(seconds=5)),
        signer=keys.signer("TJ-GW", at=now),
    )
    record = cosign(checkpoint, signer=keys.signer("RU-GW", at=now), time=now - timedelta(seconds=2))
    return seal_witness(record, signer=keys.signer("RU-GW", at=now), recipient="TJ-GW", created_at=now)


async def inject(exchange: ExchangeHarness, country: str, sealed: SealedMessage) -> None:
    """Publish bytes into `country`'s inbound exchange, as the peer's shovel would."""
    await exchange.broker[country].publish(
        exchange=INBOUND, routing_key=country.lower(), body=sealed.raw, message_id=str(sealed.envelope.id)
    )


async def acked(exchange: ExchangeHarness, country: str) -> None:
    async def empty() -> bool:
        return await exchange.held(country, INBOUND) == 0

    await exchange.wait_until(empty, what=f"{country}'s inbound queue acked empty")


async def entries_about(gateway: Gateway, message_id: UUID, kind: EntryKind) -> list[AuditEntry]:
    return await gateway.audit.find(message_id, kinds=[kind])


async def receipted_legislation_change(tajikistan: Gateway) -> int:
    """Send one message and wait for its receipt; the size of TJ's log afterwards."""
    sent = await tajikistan.send(
        sample_payloads()["legislation.change"], to="RU-MINTRUD", wait_receipt=True,
        receipt_timeout_s=RECEIPT_WAIT_S,
    )  # fmt: skip
    assert sent.receipt is not None
    return await tajikistan.audit.size()


@pytest.mark.parametrize("forgery", ["another root", "a tree the log never reached"])
async def test_a_countersignature_of_a_root_our_log_does_not_have_is_rejected_and_never_answered(
    forgery: str, exchange: ExchangeHarness, gateways: dict[str, Gateway]
) -> None:
    tajikistan, russia = gateways["TJ"], gateways["RU"]
    size = await receipted_legislation_change(tajikistan)
    if forgery == "another root":
        sealed = forged_witness(exchange, size=size, root=hashlib.sha256(b"another history").digest())
    else:
        sealed = forged_witness(exchange, size=size + 1000, root=await tajikistan.audit.root(size))
    message_id = sealed.envelope.id

    await inject(exchange, "TJ", sealed)

    async def rejected() -> list[AuditEntry]:
        return await entries_about(tajikistan, message_id, EntryKind.REJECTED)

    [entry] = await exchange.wait_until(rejected, what="the forged countersignature rejected")
    assert (entry.reason, entry.envelope, entry.peer) == (
        str(Reason.AUDIT_WITNESS_MISMATCH),
        sealed.raw,
        "RU-GW",
    )
    quarantined = [m for m in await exchange.broker["TJ"].peek(QUARANTINE) if m.message_id == str(message_id)]
    assert len(quarantined) == 1
    assert quarantined[0].body == sealed.raw
    assert quarantined[0].headers["x-reason"] == str(Reason.AUDIT_WITNESS_MISMATCH)
    assert quarantined[0].headers["x-sha256"] == sha256_hex(sealed.raw)
    assert quarantined[0].headers["x-audit-index"] == entry.index
    # Acked, and never answered: a receipt would have been published before the ack.
    await acked(exchange, "TJ")
    assert await entries_about(tajikistan, message_id, EntryKind.RECEIVED) == []
    assert await entries_about(tajikistan, message_id, EntryKind.RECEIPT_SENT) == []
    assert await entries_about(russia, message_id, EntryKind.RECEIPT_RECEIVED) == []


async def test_a_countersignature_delivered_twice_is_kept_once(
    exchange: ExchangeHarness, gateways: dict[str, Gateway]
) -> None:
    tajikistan = gateways["TJ"]
    size = await receipted_legislation_change(tajikistan)
    sealed = forged_witness(exchange, size=size, root=await tajikistan.audit.root(size))  # an honest one

    for _ in range(2):
        await inject(exchange, "TJ", sealed)
    await acked(exchange, "TJ")

    [received] = await entries_about(tajikistan, sealed.envelope.id, EntryKind.RECEIVED)
    assert received.envelope == sealed.raw
    assert await entries_about(tajikistan, sealed.envelope.id, EntryKind.REJECTED) == []
    assert await entries_about(tajikistan, sealed.envelope.id, EntryKind.RECEIPT_SENT) == []
