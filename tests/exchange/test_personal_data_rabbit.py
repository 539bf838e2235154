"""Personal data, erasure, key rotation and trust updates across the real RabbitMQ, with both gateways."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar
from uuid import UUID

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.audit import EntryKind, entry_leaf_hash, root_from_leaf_hashes
from broker.audit.receipt_refs import answered_ids, is_ref
from broker.audit.stores import AuditStore
from broker.core.catalogue import sample_payloads
from broker.core.catalogue.receipt import Verdict
from broker.core.errors import Reason, VerificationError
from broker.core.personal import (
    SEALED_KEY_HEADER,
    WrappedKey,
    decode_key_header,
    encode_key_header,
    new_data_key,
    wrap_data_key,
)
from broker.core.pki import build_crl, certificate_thumbprint
from broker.core.sealing import open_message, seal, verify_envelope
from broker.core.trust_update import build_trust_update
from broker.exchange.devkit import DevExchange
from broker.exchange.gateway import Gateway, gateway_from_settings
from broker.exchange.subscriber import Subscription
from broker.exchange.topology import INBOUND
from broker.exchange.transport import RabbitTransport
from broker.exchange.transport_api import IncomingMessage
from broker.state.outbox import OutboxRecord, SendState
from broker.state.settings import ExchangeSettings
from tests.support.exchange import dev_exchange_in_thread

pytestmark = pytest.mark.rabbitmq
T = TypeVar("T")

PERSONAL_VALUES = ("RAKHIMOV", "FARRUKH", "400123456", "Раҳимов", "Фаррух", "Профсоюзная", "Вавилова")
CONSULATE = "TJ-CONSULATE-MOSCOW"
SIGNED_MESSAGE_KINDS = frozenset(
    {
        EntryKind.SENT,
        EntryKind.RECEIVED,
        EntryKind.RECEIPT_SENT,
        EntryKind.RECEIPT_RECEIVED,
        EntryKind.TRUST_UPDATE,
    }
)


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevExchange]:
    with dev_exchange_in_thread(tmp_path_factory.mktemp("personal")) as dev:
        yield dev


@pytest_asyncio.fixture
async def gateways(exchange: DevExchange) -> AsyncIterator[dict[str, Gateway]]:
    running = {country: await gateway_from_settings(exchange.settings[country]) for country in ("TJ", "RU")}
    for gateway in running.values():
        await gateway.start()
    yield running
    for gateway in running.values():
        await gateway.close()


@pytest_asyncio.fixture
async def consulate(exchange: DevExchange) -> AsyncIterator[Subscription]:
    transport = await RabbitTransport.connect(url=exchange.gateway_url("TJ"), name="test-consulate")
    subscription = Subscription(
        transport=transport,
        agreement=exchange.agreement,
        trust=exchange.keystore.trust_store(exchange.agreement.countries),
        authority_id=CONSULATE,
        types=["worker.death", "work_permit.cancellation"],
        citizenship="TJ",
        decryptor=exchange.keystore.decryptor(CONSULATE),
    )
    await subscription.declare()
    await transport.purge(subscription.queue)
    yield subscription
    await transport.close()


def _assert_no_personal_value(data: bytes | str, where: str) -> None:
    text = data if isinstance(data, str) else data.decode("utf-8", errors="replace")
    for value in PERSONAL_VALUES:
        assert value not in text, f"{value!r} in {where}"


async def _verify_log(store: AuditStore, gateway: Gateway) -> int:
    """An auditor's check without any decryption key: every leaf, the root, every envelope's signature."""
    hashes = []
    checked = 0
    async for entry in store.entries():
        assert entry.leaf_hash_matches(), f"entry {entry.index} was edited"
        hashes.append(entry_leaf_hash(entry))
        if entry.kind in SIGNED_MESSAGE_KINDS and not is_ref(entry.envelope):  # a reference is not signed
            verify_envelope(entry.envelope, trust=gateway.trust, agreement=gateway.agreement)
            checked += 1
    # The root of the entries read: the gateways may still append (a witness, a checkpoint) meanwhile.
    assert root_from_leaf_hashes(hashes) == await store.root(len(hashes))
    return checked


async def test_personal_data_is_ciphertext_on_the_wire_and_in_the_logs_and_can_be_erased(
    exchange: DevExchange, gateways: dict[str, Gateway], consulate: Subscription
) -> None:
    tj, ru = gateways["TJ"], gateways["RU"]
    sent = await ru.send(
        sample_payloads()["worker.death"], to="TJ-MOL", wait_receipt=True, receipt_timeout_s=20
    )
    assert sent.receipt is not None
    assert sent.receipt.verdict == Verdict.ACCEPTED

    # What the consulate's queue holds, read with a raw client and left in place.
    raw_reader = await RabbitTransport.connect(url=exchange.gateway_url("TJ"), name="test-raw-reader")
    try:
        queued = await raw_reader.peek(consulate.queue)
    finally:
        await raw_reader.close()
    assert [m.message_id for m in queued] == [str(sent.message_id)]
    for message in queued:
        _assert_no_personal_value(message.body, "a queued body")
        for name, value in message.headers.items():
            _assert_no_personal_value(str(value), f"header {name}")
    for gateway in (tj, ru):
        async for entry in gateway.audit.entries():
            _assert_no_personal_value(entry.envelope, f"{gateway.country} audit entry {entry.index}")

    # The consulate, a permitted recipient, reads it; another TJ authority holding the same bytes cannot.
    [alert] = await consulate.collect(1, timeout_s=10)
    assert alert.payload == sample_payloads()["worker.death"]
    [message] = queued
    wraps = decode_key_header(message.headers["x-sealed-key"])
    assert {w.holder for w in wraps} == {"TJ-MOL", CONSULATE}
    outsider = exchange.keystore.decryptor("TJ-MVD")
    with pytest.raises(VerificationError) as refused:
        open_message(
            message.body,
            trust=tj.trust,
            agreement=tj.agreement,
            data_key_for=lambda envelope: outsider.unwrap(wraps, message_id=envelope.id),
        )
    assert refused.value.reason is Reason.PAYLOAD_UNDECRYPTABLE

    # Erasure: TJ destroys the message's data key; the log still verifies, the entry no longer opens.
    personal = tj.personal
    assert personal is not None
    [received] = await tj.audit.find(sent.message_id, kinds=[EntryKind.RECEIVED])
    header = await personal.vault.get(sent.message_id)
    assert header is not None
    mol = exchange.keystore.decryptor("TJ-MOL")
    opened = open_message(
        received.envelope,
        trust=tj.trust,
        agreement=tj.agreement,
        data_key_for=lambda envelope: mol.unwrap(decode_key_header(header), message_id=envelope.id),
    )
    assert opened.payload == sample_payloads()["worker.death"]
    assert await personal.vault.destroy(sent.message_id, at=datetime.now(UTC))
    assert await personal.vault.get(sent.message_id) is None
    assert await _verify_log(tj.audit, tj) >= 1
    erased_header = await personal.vault.get(sent.message_id)  # None: nothing left to unwrap
    with pytest.raises(VerificationError) as erased:
        open_message(
            received.envelope,
            trust=tj.trust,
            agreement=tj.agreement,
            data_key_for=lambda envelope: mol.unwrap(
                decode_key_header(erased_header), message_id=envelope.id
            ),
        )
    assert erased.value.reason is Reason.PAYLOAD_UNDECRYPTABLE


async def test_rotating_keys_during_a_stream_of_a_thousand_loses_nothing(
    exchange: DevExchange, gateways: dict[str, Gateway]
) -> None:
    tj, ru = gateways["TJ"], gateways["RU"]
    keystore = exchange.keystore
    payloads = [sample_payloads()["worker.death"], sample_payloads()["employer.permit"]]
    total, batch = 1000, 100
    results = []
    for start in range(0, total, batch):
        if start == total // 2:
            # Mid-stream: TJ rotates its gateway key (receipts) and TJ-MOL's key-agreement key, and tells
            # RU about the new key over the channel; RU rotates RU-MVD's signing key.
            keystore.rotate("TJ-GW", now=datetime.now(UTC))
            tj.replace_gateway_signer(keystore.signer("TJ-GW"))
            rotated = keystore.issue_encryption("TJ-MOL", now=datetime.now(UTC))
            update = await tj.send(
                build_trust_update("TJ", authority_certificates=[rotated]),
                to="RU-GW",
                wait_receipt=True,
                receipt_timeout_s=20,
            )
            assert update.receipt is not None
            assert update.receipt.verdict == Verdict.ACCEPTED
            keystore.rotate("RU-MVD", now=datetime.now(UTC))
        results += await asyncio.gather(
            *(
                ru.send(
                    payloads[i % 2], to="TJ-MOL", sender="RU-MVD", wait_receipt=True, receipt_timeout_s=60
                )
                for i in range(start, start + batch)
            )
        )
    assert len(results) == total
    assert all(r.receipt is not None and r.receipt.verdict == Verdict.ACCEPTED for r in results)
    ids = {r.message_id for r in results}
    received = [e async for e in tj.audit.entries() if e.kind is EntryKind.RECEIVED and e.message_id in ids]
    assert len(received) == total
    for entry in received:  # every message verifies, whichever RU-MVD key signed it
        assert (
            verify_envelope(entry.envelope, trust=tj.trust, agreement=tj.agreement).signer.authority_id
            == "RU-MVD"
        )
    receipt_signers = set()
    async for entry in ru.audit.entries():
        # The signed receipts (single or batched) answering these messages, not the references to them.
        if entry.kind is EntryKind.RECEIPT_RECEIVED and set(answered_ids(entry)) & set(ids):
            receipt_signers.add(
                verify_envelope(entry.envelope, trust=ru.trust, agreement=ru.agreement).signer.certificate
            )
    assert len(receipt_signers) == 2  # TJ-GW's old and new key
    await _verify_log(tj.audit, tj)
    await _verify_log(ru.audit, ru)


async def test_a_crl_over_the_channel_revokes_new_messages_and_old_ones_still_verify(
    exchange: DevExchange, gateways: dict[str, Gateway]
) -> None:
    tj, ru = gateways["TJ"], gateways["RU"]
    keystore = exchange.keystore
    before = await ru.send(
        sample_payloads()["employer.permit"],
        to="TJ-MOL",
        sender="RU-MINTRUD",
        wait_receipt=True,
        receipt_timeout_s=20,
    )
    assert before.receipt is not None
    assert before.receipt.verdict == Verdict.ACCEPTED
    stolen = keystore.signer("RU-MINTRUD")
    await asyncio.sleep(1.1)  # a CRL keeps whole seconds: revoke strictly after the first message
    keystore.revoke("RU-MINTRUD", now=datetime.now(UTC))
    crl = keystore.current_crl("RU")
    assert crl is not None
    update = await ru.send(
        build_trust_update("RU", crl=crl), to="TJ-GW", wait_receipt=True, receipt_timeout_s=20
    )
    assert update.receipt is not None
    assert update.receipt.verdict == Verdict.ACCEPTED
    assert [e.kind for e in await tj.audit.find(update.message_id, kinds=[EntryKind.TRUST_UPDATE])] == [
        EntryKind.TRUST_UPDATE
    ]

    after = seal(
        sample_payloads()["employer.permit"],
        sender="RU-MINTRUD",
        recipient="TJ-MOL",
        signer=stolen,
        created_at=datetime.now(UTC),
    )
    waiter = asyncio.create_task(_receipt_of(ru, after.envelope.id))
    await ru.publish_sealed(after)
    receipt = await asyncio.wait_for(waiter, 20)
    assert receipt == (Verdict.REJECTED, str(Reason.CERT_REVOKED))

    [old] = await tj.audit.find(before.message_id, kinds=[EntryKind.RECEIVED])
    assert (
        verify_envelope(old.envelope, trust=tj.trust, agreement=tj.agreement).envelope.sender == "RU-MINTRUD"
    )
    await _verify_log(tj.audit, tj)


async def _receipt_of(gateway: Gateway, message_id: UUID) -> tuple[str, str | None]:
    while True:
        record = await gateway.outbox.get(message_id)
        if record is not None and record.receipt_at is not None:
            return record.state.value.replace("receipted", "accepted"), record.reason
        await asyncio.sleep(0.05)


# -- the unsigned key header tampered with in transit (issue 21, item 5) ---------------------------
async def _gateway(exchange: DevExchange, country: str, state: Path, **overrides: object) -> Gateway:
    base = exchange.settings[country].model_dump()
    return await gateway_from_settings(
        ExchangeSettings.load(None, **{**base, "state_dir": state, **overrides})
    )


async def _intercept(exchange: DevExchange, message_id: UUID) -> IncomingMessage:
    """Take a message off TJ's inbound queue before any gateway consumes it, as someone on the path."""
    tap = await RabbitTransport.connect(url=exchange.gateway_url("TJ"), name="test-tap")
    try:
        for _ in range(400):
            message = await tap.get(INBOUND)
            if message is not None and message.message_id == str(message_id):
                return message
            await asyncio.sleep(0.05)
    finally:
        await tap.close()
    raise AssertionError(f"{message_id} never reached TJ's inbound queue")


async def _deliver_with_header(exchange: DevExchange, message: IncomingMessage, header: str) -> None:
    tap = await RabbitTransport.connect(url=exchange.gateway_url("TJ"), name="test-tamperer")
    try:
        await tap.publish(
            exchange=INBOUND,
            routing_key="tj",
            body=message.body,
            message_id=str(message.message_id),
            headers={**message.headers, SEALED_KEY_HEADER: header},
        )
    finally:
        await tap.close()


def _junk_wraps(exchange: DevExchange, message_id: UUID) -> list[WrappedKey]:
    """Wraps anyone can make for TJ-MOL: one that does not open, one that opens to another key."""
    certificate = exchange.keystore.encryption_certificates("TJ-MOL")[-1]
    return [
        WrappedKey(holder="TJ-MOL", kid=certificate_thumbprint(certificate), enc=secrets.token_bytes(80)),
        wrap_data_key(new_data_key(), message_id=message_id, certificate=certificate),
    ]


async def test_a_death_notice_with_junk_wraps_prepended_in_transit_is_accepted(
    exchange: DevExchange, tmp_path: Path
) -> None:
    # RU never re-sends here (hourly resend check): what TJ accepts is the tampered copy itself.
    ru = await _gateway(exchange, "RU", tmp_path, resend_check_interval_s=3600)
    tj = await _gateway(exchange, "TJ", tmp_path)
    try:
        await ru.start()
        sending = asyncio.create_task(
            ru.send(sample_payloads()["worker.death"], to="TJ-MOL", wait_receipt=True, receipt_timeout_s=60)
        )
        message_id = await _wait_for_outbox_row(ru)
        original = await _intercept(exchange, message_id)
        wraps = decode_key_header(original.headers[SEALED_KEY_HEADER])
        await _deliver_with_header(
            exchange, original, encode_key_header([*_junk_wraps(exchange, message_id), *wraps])
        )
        await tj.start()

        sent = await sending
        assert sent.receipt is not None
        assert (sent.receipt.verdict, sent.receipt.reason) == (Verdict.ACCEPTED, None)
        record = await ru.outbox.get(message_id)
        assert record is not None
        assert (record.state, record.attempts) == (SendState.RECEIPTED, 1)
        kinds = [entry.kind for entry in await tj.audit.find(message_id)]
        assert EntryKind.RECEIVED in kinds
        assert EntryKind.REJECTED not in kinds
    finally:
        await ru.close()
        await tj.close()


async def test_a_death_notice_whose_key_header_was_replaced_is_resent_intact_and_accepted(
    exchange: DevExchange, tmp_path: Path
) -> None:
    # The resend loop is left idle and driven by hand below, so the order of events is fixed.
    ru = await _gateway(
        exchange,
        "RU",
        tmp_path,
        resend_check_interval_s=3600,
        receipt_deadlines_s={"worker.death": 1.0},
    )
    tj = await _gateway(exchange, "TJ", tmp_path)
    try:
        await ru.start()
        sending = asyncio.create_task(
            ru.send(sample_payloads()["worker.death"], to="TJ-MOL", wait_receipt=True, receipt_timeout_s=60)
        )
        message_id = await _wait_for_outbox_row(ru)
        original = await _intercept(exchange, message_id)
        await _deliver_with_header(exchange, original, encode_key_header(_junk_wraps(exchange, message_id)))
        await tj.start()

        # The caller learns of the refusal at once; the message is not given up.
        sent = await sending
        assert sent.receipt is not None
        assert (sent.receipt.verdict, sent.receipt.reason) == (
            Verdict.REJECTED,
            str(Reason.PAYLOAD_UNDECRYPTABLE),
        )
        record = await ru.outbox.get(message_id)
        assert record is not None
        assert record.state in (SendState.SENT, SendState.CONFIRMED)
        assert record.reason == str(Reason.PAYLOAD_UNDECRYPTABLE)
        retryable = ("exchange_retryable_rejections_total", {"reason": str(Reason.PAYLOAD_UNDECRYPTABLE)})
        assert ru.metrics.registry.get_sample_value(*retryable) == 1

        # At its deadline it goes again, with the header the sender kept, and is accepted.
        async def resent() -> int:
            await asyncio.sleep(0.1)
            return await ru.resend_overdue()

        assert await _until(resent, what="the re-send at the receipt deadline") == 1
        final = await _until(lambda: _receipted(ru, message_id), what="the receipt of the re-sent copy")
        assert (final.state, final.reason, final.attempts) == (SendState.RECEIPTED, None, 2)
        kinds = [entry.kind for entry in await tj.audit.find(message_id)]
        assert kinds.count(EntryKind.REJECTED) == 1
        assert EntryKind.RECEIVED in kinds
    finally:
        await ru.close()
        await tj.close()


async def _wait_for_outbox_row(gateway: Gateway) -> UUID:
    async def row() -> UUID | None:
        records = await gateway.outbox.records(limit=1)
        return records[0].message_id if records else None

    return await _until(row, what="the sender's outbox row")


async def _receipted(gateway: Gateway, message_id: UUID) -> OutboxRecord | None:
    record = await gateway.outbox.get(message_id)
    return record if record is not None and record.state is SendState.RECEIPTED else None


async def _until(check: Callable[[], Awaitable[T | None]], *, what: str, timeout_s: float = 30.0) -> T:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


# -- a peer CRL past its nextUpdate (issue 21, item 11) --------------------------------------------
def _overdue_crl(exchange: DevExchange, country: str, *, next_update: datetime) -> None:
    """Replace `country`'s CRL on disk by one with the same revocations, due at `next_update`: what
    a gateway holds when the peer's CA is late re-issuing it."""
    root = exchange.keystore.root
    ca_key = serialization.load_pem_private_key(
        (root / country / "ca" / "private" / "ca-1.key.pem").read_bytes(), password=None
    )
    assert isinstance(ca_key, Ed25519PrivateKey)
    ca_cert = x509.load_pem_x509_certificate((root / country / "ca" / "ca-1.cert.pem").read_bytes())
    current = exchange.keystore.current_crl(country)
    assert current is not None
    crl = build_crl(
        ca_key=ca_key,
        ca_cert=ca_cert,
        revoked=[(entry.serial_number, entry.revocation_date_utc) for entry in current],
        this_update=ca_cert.not_valid_before_utc,
        next_update=next_update,
        crl_number=1000,
    )
    (root / country / "crl.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))


async def test_a_stale_peer_crl_warns_within_its_grace_then_refuses_until_a_fresh_one_arrives(
    exchange: DevExchange, tmp_path: Path
) -> None:
    permit = sample_payloads()["employer.permit"]
    due = datetime.now(UTC) - timedelta(minutes=10)
    _overdue_crl(exchange, "RU", next_update=due)
    # Both TJ gateways below load the overdue RU CRL at start; RU re-sends only when told to.
    ru = await _gateway(
        exchange,
        "RU",
        tmp_path / "ru",
        resend_check_interval_s=3600,
        receipt_deadlines_s={"employer.permit": 1.0},
    )
    lenient = await _gateway(exchange, "TJ", tmp_path / "tj-lenient")  # default grace: 7 days
    strict = await _gateway(exchange, "TJ", tmp_path / "tj-strict", crl_grace_s=60)
    try:
        await ru.start()

        # Within the grace period: accepted, and counted (with a warning) on every message.
        await lenient.start()
        within = await ru.send(permit, to="TJ-MOL", sender="RU-MVD", wait_receipt=True, receipt_timeout_s=30)
        assert within.receipt is not None
        assert within.receipt.verdict == Verdict.ACCEPTED
        # (At least: a receipt or countersignature of an earlier test may still reach this gateway.)
        stale_count = lenient.metrics.registry.get_sample_value("exchange_crl_stale_total", {"country": "RU"})
        assert stale_count is not None
        assert stale_count >= 1
        await lenient.stop()

        # Past it: refused as crl.stale, and the sender keeps the message to send it again.
        await strict.start()
        past = await ru.send(permit, to="TJ-MOL", sender="RU-MVD", wait_receipt=True, receipt_timeout_s=30)
        assert past.receipt is not None
        assert (past.receipt.verdict, past.receipt.reason) == (Verdict.REJECTED, str(Reason.CRL_STALE))
        held = await ru.outbox.get(past.message_id)
        assert held is not None
        assert (held.state, held.reason) == (SendState.CONFIRMED, str(Reason.CRL_STALE))

        # RU's CA re-issues its CRL and sends it over: the update passes although the CRL it
        # replaces is stale, and the message re-sent at its deadline is accepted.
        fresh = exchange.keystore.reissue_crl("RU", now=datetime.now(UTC))
        update = await ru.send(
            build_trust_update("RU", crl=fresh), to="TJ-GW", wait_receipt=True, receipt_timeout_s=30
        )
        assert update.receipt is not None
        assert update.receipt.verdict == Verdict.ACCEPTED

        async def resent() -> int:
            await asyncio.sleep(0.1)
            return await ru.resend_overdue()

        assert await _until(resent, what="the re-send at the receipt deadline") >= 1
        final = await _until(lambda: _receipted(ru, past.message_id), what="the receipt of the re-sent copy")
        assert (final.reason, final.attempts) == (None, 2)
        kinds = [entry.kind for entry in await strict.audit.find(past.message_id)]
        assert (kinds.count(EntryKind.REJECTED), kinds.count(EntryKind.RECEIVED)) == (1, 1)
    finally:
        exchange.keystore.reissue_crl("RU", now=datetime.now(UTC))  # the module's other tests need it current
        for gateway in (ru, lenient, strict):
            await gateway.close()
