"""Countersignatures handed back: the `checkpoint.witness` payload, its checks, and gateways carrying it.

The pure core (`broker.audit.witnessing`), then one gateway over the in-memory broker fed a peer's receipt,
then two gateways exchanging real messages (tests/support/audit_run.py). The same over the real
RabbitMQ is in tests/exchange/test_witness_exchange.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from structlog.testing import capture_logs

from broker.audit.checkpoint import CheckpointBody, SignedCheckpoint, WitnessRecord, cosign, sign_checkpoint
from broker.audit.entry import AuditEntry, EntryKind
from broker.audit.reconcile import digest, reconcile
from broker.audit.stores.sqlite import SqliteAuditStore
from broker.audit.verify import verify_log
from broker.audit.witnessing import WITNESS_TYPE, check_against_log, countersigned_record, seal_witness
from broker.core.agreement import Agreement
from broker.core.canonical import canonical_bytes
from broker.core.catalogue import payload_to_json
from broker.core.catalogue.receipt import Receipt, Verdict
from broker.core.catalogue.witness import CheckpointWitness
from broker.core.errors import PolicyError, Reason, TransportError, VerificationError
from broker.core.ids import uuid7
from broker.core.sealing import open_message, seal
from broker.core.trust import TrustStore
from broker.exchange.fake_transport import FakeTransport
from broker.exchange.topology import INBOUND, outbound_queue
from broker.exchange.transport_api import NO_HEADERS, HeaderValue
from broker.state.keystore import KeyStore
from tests.support.audit_run import FakeClock, Side, build_side, sqlite_exchange

T = TypeVar("T")


def _checkpoint(
    keys: KeyStore, at: datetime, *, origin: str = "TJ-GW", size: int = 7, root: bytes = bytes(range(32))
) -> SignedCheckpoint:
    body = CheckpointBody(origin=origin, tree_size=size, root_hash=root, time=at)
    return sign_checkpoint(body, signer=keys.signer(origin, at=at))


def _record(keys: KeyStore, at: datetime) -> WitnessRecord:
    """RU-GW's countersignature of a TJ-GW checkpoint."""
    signed = _checkpoint(keys, at)
    return cosign(signed, signer=keys.signer("RU-GW", at=at), time=at + timedelta(seconds=1))


# -- the pure core ---------------------------------------------------------------------------------


class TestPayload:
    def test_the_payload_is_the_witness_record_byte_for_byte(
        self, dev_pki: KeyStore, pki_now: datetime
    ) -> None:
        record = _record(dev_pki, pki_now + timedelta(days=3))
        payload = record.to_payload()
        assert canonical_bytes(payload_to_json(payload)) == record.to_bytes()
        assert WitnessRecord.from_payload(payload) == record

    def test_sealed_by_the_witness_it_opens_at_the_origin_as_the_same_record(
        self, dev_pki: KeyStore, agreement: Agreement, trust: TrustStore, pki_now: datetime
    ) -> None:
        at = pki_now + timedelta(days=3)
        record = _record(dev_pki, at)
        sealed = seal_witness(record, signer=dev_pki.signer("RU-GW", at=at), recipient="TJ-GW", created_at=at)
        opened = open_message(sealed.raw, trust=trust, agreement=agreement, local_country="TJ")
        assert isinstance(opened.payload, CheckpointWitness)
        assert (opened.envelope.type, opened.envelope.sender) == (WITNESS_TYPE, "RU-GW")
        assert countersigned_record(opened.payload, sender="RU-GW", origin="TJ-GW", trust=trust) == record
        with pytest.raises(ValueError, match="cannot send"):
            seal_witness(record, signer=dev_pki.signer("TJ-GW", at=at), recipient="RU-GW", created_at=at)

    def test_a_ministry_may_not_send_one(
        self, dev_pki: KeyStore, agreement: Agreement, trust: TrustStore, pki_now: datetime
    ) -> None:
        at = pki_now + timedelta(days=3)
        sealed = seal(
            _record(dev_pki, at).to_payload(),
            sender="RU-MVD",
            recipient="TJ-GW",
            signer=dev_pki.signer("RU-MVD", at=at),
            created_at=at,
        )
        with pytest.raises(PolicyError) as caught:
            open_message(sealed.raw, trust=trust, agreement=agreement, local_country="TJ")
        assert caught.value.reason is Reason.POLICY_SENDER_NOT_ALLOWED


def _retimed(payload: CheckpointWitness) -> CheckpointWitness:
    return payload.model_copy(update={"time": "2025-01-05T00:00:00.000000Z"})


class TestCountersignedRecord:
    @pytest.mark.parametrize(
        ("case", "sender", "origin", "edit", "reason"),
        [
            ("sent by another than the witness", "RU-MVD", "TJ-GW", None, Reason.CERT_AUTHORITY_MISMATCH),
            ("a checkpoint of another log", "RU-GW", "RU-GW", None, Reason.AUDIT_CHECKPOINT_INVALID),
            ("time edited after countersigning", "RU-GW", "TJ-GW", _retimed, Reason.SIGNATURE_INVALID),
        ],
    )
    def test_refuses(
        self,
        case: str,
        sender: str,
        origin: str,
        edit: Callable[[CheckpointWitness], CheckpointWitness] | None,
        reason: Reason,
        dev_pki: KeyStore,
        trust: TrustStore,
        pki_now: datetime,
    ) -> None:
        payload = _record(dev_pki, pki_now + timedelta(days=3)).to_payload()
        if edit is not None:
            payload = edit(payload)
        with pytest.raises(VerificationError) as caught:
            countersigned_record(payload, sender=sender, origin=origin, trust=trust)
        assert caught.value.reason is reason, case

    def test_a_checkpoint_our_gateway_never_signed_is_refused(
        self, dev_pki: KeyStore, trust: TrustStore, pki_now: datetime
    ) -> None:
        at = pki_now + timedelta(days=3)
        body = CheckpointBody(origin="TJ-GW", tree_size=7, root_hash=bytes(32), time=at)
        ru = dev_pki.signer("RU-GW", at=at)
        by_ru = sign_checkpoint(replace(body, origin="RU-GW"), signer=ru)
        claimed = SignedCheckpoint(body=body, signature=by_ru.signature)  # RU's signature, TJ's name
        payload = cosign(claimed, signer=ru, time=at).to_payload()
        with pytest.raises(VerificationError) as caught:
            countersigned_record(payload, sender="RU-GW", origin="TJ-GW", trust=trust)
        assert caught.value.reason is Reason.SIGNATURE_INVALID


class TestCheckAgainstLog:
    def test_our_root_at_that_size_passes(self, dev_pki: KeyStore, pki_now: datetime) -> None:
        checkpoint = _checkpoint(dev_pki, pki_now, size=7, root=b"\x01" * 32)
        check_against_log(checkpoint, log_size=9, root=b"\x01" * 32)

    @pytest.mark.parametrize(("log_size", "root"), [(9, b"\x02" * 32), (6, None)])
    def test_another_root_or_a_size_we_never_reached_is_a_mismatch(
        self, log_size: int, root: bytes | None, dev_pki: KeyStore, pki_now: datetime
    ) -> None:
        checkpoint = _checkpoint(dev_pki, pki_now, size=7, root=b"\x01" * 32)
        with pytest.raises(VerificationError) as caught:
            check_against_log(checkpoint, log_size=log_size, root=root)
        assert caught.value.reason is Reason.AUDIT_WITNESS_MISMATCH


# -- one gateway over the in-memory broker ---------------------------------------------------------


class LosingTransport(FakeTransport):
    """Refuses to confirm countersignatures, as a broker that is down would; carries everything else."""

    async def publish(
        self,
        *,
        exchange: str,
        routing_key: str,
        body: bytes,
        message_id: str,
        headers: Mapping[str, HeaderValue] = NO_HEADERS,
        timeout: float = 10.0,  # noqa: ASYNC109 - the transport's signature
        mandatory: bool = True,
        correlation_id: str | None = None,
    ) -> None:
        if headers.get("x-type") == WITNESS_TYPE:
            raise TransportError(Reason.TRANSPORT_NOT_CONFIRMED, "no publisher confirm (test)")
        await super().publish(
            exchange=exchange,
            routing_key=routing_key,
            body=body,
            message_id=message_id,
            headers=headers,
            timeout=timeout,
            mandatory=mandatory,
            correlation_id=correlation_id,
        )


async def until(check: Callable[[], Awaitable[T | None]], *, what: str) -> T:
    async with asyncio.timeout(10):
        while not (value := await check()):  # noqa: ASYNC110 - the fake broker sends no event
            await asyncio.sleep(0.005)
    assert value, what
    return value


@pytest.fixture
async def tajik_side(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    dev_pki: KeyStore,
    agreement: Agreement,
    trust: TrustStore,
    pki_now: datetime,
) -> AsyncIterator[Side]:
    """TJ's gateway, started, over the in-memory broker (one that loses countersignatures if asked)."""
    start = pki_now + timedelta(days=30)
    store = await SqliteAuditStore.open(tmp_path / "tj.sqlite")
    transport = LosingTransport(name="TJ") if getattr(request, "param", "") == "losing" else None
    side = await build_side(
        "TJ", store=store, state_dir=tmp_path / "tj", keys=dev_pki, agreement=agreement, trust=trust,
        clock=FakeClock(start), at=start, transport=transport,
    )  # fmt: skip
    await side.gateway.start()
    try:
        yield side
    finally:
        await side.gateway.stop()
        await side.transport.close()
        side.gateway.outbox.close()
        await store.close()


async def _receipt_from_russia(side: Side, keys: KeyStore, checkpoint: SignedCheckpoint) -> Receipt:
    """A receipt of RU-GW carrying `checkpoint`, arriving at TJ's inbound queue."""
    at = checkpoint.body.time
    receipt = Receipt(
        message_id=uuid7(),
        sha256="ab" * 32,
        verdict=Verdict.ACCEPTED,
        received_at=at,
        audit_index=0,
        checkpoint=checkpoint.for_receipt(),
    )
    sealed = seal(
        receipt, sender="RU-GW", recipient="TJ-GW", signer=keys.signer("RU-GW", at=at), created_at=at
    )
    await side.transport.publish(
        exchange=INBOUND, routing_key="tj", body=sealed.raw, message_id=str(sealed.envelope.id)
    )
    return receipt


async def _entries(side: Side, kind: EntryKind, message_type: str | None = None) -> list[AuditEntry]:
    return [
        entry
        async for entry in side.store.entries()
        if entry.kind is kind and (message_type is None or entry.message_type == message_type)
    ]


async def test_a_new_peer_checkpoint_is_countersigned_and_sent_back_once(
    tajik_side: Side, dev_pki: KeyStore, trust: TrustStore, pki_now: datetime
) -> None:
    checkpoint = _checkpoint(dev_pki, pki_now + timedelta(days=30), origin="RU-GW", size=3)
    for _ in range(2):  # two receipts sharing one checkpoint, as under load
        await _receipt_from_russia(tajik_side, dev_pki, checkpoint)

    async def both_receipts_handled() -> list[AuditEntry]:
        # Both logged and the gateway idle: the second receipt's handler may still be countersigning.
        found = await _entries(tajik_side, EntryKind.RECEIPT_RECEIVED)
        idle = tajik_side.transport.deliveries_in_flight == 0
        return found if len(found) == 2 and idle else []

    await until(both_receipts_handled, what="both receipts handled")
    [witness] = await _entries(tajik_side, EntryKind.WITNESS)
    [sent] = await _entries(tajik_side, EntryKind.SENT, WITNESS_TYPE)
    [published] = await tajik_side.transport.peek(outbound_queue("ru"))
    assert published.body == sent.envelope
    assert published.headers["x-type"] == WITNESS_TYPE
    assert sent.peer == "RU-GW"
    payload = open_message(sent.envelope, trust=trust, agreement=tajik_side.gateway.agreement).payload
    assert isinstance(payload, CheckpointWitness)
    record = countersigned_record(payload, sender="TJ-GW", origin="RU-GW", trust=trust)
    assert record.to_bytes() == witness.envelope
    assert record.checkpoint == checkpoint
    # Receipts are never answered: the countersignature is all that went back.
    assert await _entries(tajik_side, EntryKind.RECEIPT_SENT) == []


@pytest.mark.parametrize("tajik_side", ["losing"], indirect=True)
async def test_a_countersignature_the_broker_loses_is_logged_and_the_receipt_still_counts(
    tajik_side: Side, dev_pki: KeyStore, pki_now: datetime
) -> None:
    checkpoint = _checkpoint(dev_pki, pki_now + timedelta(days=30), origin="RU-GW", size=3)
    with capture_logs() as logs:
        receipt = await _receipt_from_russia(tajik_side, dev_pki, checkpoint)

        async def receipt_handled() -> list[MutableMapping[str, Any]]:
            return [event for event in logs if event["event"] == "receipt.unknown_message"]

        await until(receipt_handled, what="the receipt handled to its end")
    [failure] = [event for event in logs if event["event"] == "witness.send_failed"]
    assert failure["reason"] == Reason.TRANSPORT_NOT_CONFIRMED
    assert failure["type"] == WITNESS_TYPE
    # The receipt counts, the countersignature stays in TJ's own log, and the attempt is audited;
    # nothing was rejected and nothing is left queued.
    assert await tajik_side.store.find(receipt.message_id, kinds=[EntryKind.RECEIPT_RECEIVED])
    assert len(await _entries(tajik_side, EntryKind.WITNESS)) == 1
    [attempt] = await _entries(tajik_side, EntryKind.SENT, WITNESS_TYPE)
    assert str(attempt.message_id) == failure["message_id"]
    assert await tajik_side.transport.peek(outbound_queue("ru")) == []
    assert await _entries(tajik_side, EntryKind.REJECTED) == []


# -- two gateways ------------------------------------------------------------------------------------


async def test_each_log_keeps_the_peers_countersignatures_of_its_own_checkpoints(
    tmp_path: Path, dev_pki: KeyStore, agreement: Agreement, trust: TrustStore, pki_now: datetime
) -> None:
    async with sqlite_exchange(
        tmp_path, keys=dev_pki, agreement=agreement, trust=trust, start=pki_now + timedelta(days=30), rounds=2
    ) as stores:
        logs = {c: [entry async for entry in store.entries()] for c, store in stores.items()}
        for country, peer_country in (("TJ", "RU"), ("RU", "TJ")):
            own, peer = agreement.gateway(country).id, agreement.gateway(peer_country).id
            received = [
                e for e in logs[country] if e.kind is EntryKind.RECEIVED and e.message_type == WITNESS_TYPE
            ]
            peer_witness = {e.envelope for e in logs[peer_country] if e.kind is EntryKind.WITNESS}
            peer_sent = {
                e.envelope
                for e in logs[peer_country]
                if e.kind is EntryKind.SENT and e.message_type == WITNESS_TYPE
            }
            assert received
            assert len(received) == len(peer_witness) == len(peer_sent)
            for entry in received:
                assert entry.envelope in peer_sent  # the exact bytes the peer sent
                opened = open_message(entry.envelope, trust=trust, agreement=agreement, local_country=country)
                assert isinstance(opened.payload, CheckpointWitness)
                record = countersigned_record(opened.payload, sender=peer, origin=own, trust=trust)
                assert record.to_bytes() in peer_witness  # and what the peer logged as its WITNESS
                size = record.checkpoint.body.tree_size
                assert size < entry.index
                assert record.checkpoint.body.root_hash == await stores[country].root(size)
            report = verify_log(logs[country], trust=trust)
            assert report.ok, report.finding
            assert report.countersigned == len(received)
        # Countersignatures are not receipted, and reconciling the two logs finds nothing missing.
        assert reconcile(digest("TJ", logs["TJ"]), digest("RU", logs["RU"])) == []
