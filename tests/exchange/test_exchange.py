"""The exchange end to end: both gateways over the real RabbitMQ, through the shovels both ways.

What issue 3 promises: every type crosses each way verified, audited, acked and receipted; an
offline consulate misses nothing; each kind of bad message ends in quarantine with its reason, a
negative receipt and no delivery; a duplicate is delivered once and receipted identically; a
message without a receipt is re-sent with the same id; quarantine is operable from the CLI.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

import pytest
from structlog.testing import capture_logs
from typer.testing import CliRunner, Result

from broker.audit import AuditEntry, EntryKind
from broker.audit.receipt_refs import is_ref, parse_ref
from broker.cli.app import app
from broker.cli.demo import CONSULATE, CONSULATE_TYPES, ROUTES
from broker.core.catalogue import Payload, payload_to_json, sample_payloads
from broker.core.catalogue.receipt import Receipt, ReceiptBatch, Verdict, receipts_in
from broker.core.envelope import Envelope, sha256_hex
from broker.core.errors import PolicyError, Reason, TransportError
from broker.core.ids import uuid7
from broker.core.sealing import SealedMessage, open_message, seal, seal_envelope, verify_envelope
from broker.exchange.devkit import write_settings_file
from broker.exchange.gateway import Gateway
from broker.exchange.subscriber import Subscription
from broker.exchange.topology import INBOUND, QUARANTINE, subscriber_queue
from broker.state.keystore import KeyStore
from broker.state.outbox import OutboxRecord, SendState

if TYPE_CHECKING:
    from tests.support.exchange import ExchangeHarness

pytestmark = pytest.mark.rabbitmq

RECEIPT_WAIT_S = 20.0


def now() -> datetime:
    return datetime.now(UTC)


def sample(message_type: str) -> Payload:
    return sample_payloads()[message_type]


def sealed_by(
    exchange: ExchangeHarness,
    payload: Payload,
    *,
    sender: str,
    recipient: str,
    created_at: datetime | None = None,
    message_id: UUID | None = None,
) -> SealedMessage:
    moment = created_at or now()
    return seal(
        payload,
        sender=sender,
        recipient=recipient,
        signer=exchange.dev.keystore.signer(sender, at=moment),
        created_at=moment,
        message_id=message_id,
    )


async def entries(gateway: Gateway, message_id: UUID, kind: EntryKind) -> list[AuditEntry]:
    return await gateway.audit.find(message_id, kinds=[kind])


async def receipts_at(
    exchange: ExchangeHarness, gateway: Gateway, message_id: UUID, count: int = 1
) -> list[AuditEntry]:
    """Wait until `gateway` recorded `count` receipts about `message_id`; return them."""

    async def arrived() -> list[AuditEntry]:
        found = await entries(gateway, message_id, EntryKind.RECEIPT_RECEIVED)
        return found if len(found) >= count else []

    return await exchange.wait_until(
        arrived, what=f"{count} receipt(s) for {message_id}", timeout_s=RECEIPT_WAIT_S
    )


async def signed_receipt(gateway: Gateway, entry: AuditEntry) -> AuditEntry:
    """The entry holding the signed receipt that answers a message: the entry itself (a single
    receipt) or, for a message's reference, the batched receipt it names."""
    if not is_ref(entry.envelope):
        return entry
    holders = await entries(gateway, parse_ref(entry.envelope).receipt_id, entry.kind)
    assert holders, "the reference names a receipt the log does not hold"
    return holders[0]


async def receipt_arrivals(gateway: Gateway, message_id: UUID) -> list[AuditEntry]:
    """Each arrival at `gateway` of a signed receipt answering `message_id` (a batch repeated counts)."""
    arrivals: list[AuditEntry] = []
    for entry in await entries(gateway, message_id, EntryKind.RECEIPT_RECEIVED):
        if is_ref(entry.envelope):
            arrivals += await entries(
                gateway, parse_ref(entry.envelope).receipt_id, EntryKind.RECEIPT_RECEIVED
            )
        else:
            arrivals.append(entry)
    return arrivals


async def opened_receipt(
    exchange: ExchangeHarness, gateway: Gateway, entry: AuditEntry, *, at_country: str
) -> Receipt:
    """The message's answer in the receipt an audit entry holds or names, verified as its receiving
    gateway verified it."""
    holder = await signed_receipt(gateway, entry)
    opened = open_message(
        holder.envelope, trust=exchange.trust, agreement=exchange.dev.agreement, local_country=at_country
    )
    assert opened.envelope.sender == exchange.dev.agreement.gateway(exchange.peer_of(at_country)).id
    assert isinstance(opened.payload, Receipt | ReceiptBatch)
    [answer] = [
        receipt
        for receipt in receipts_in(opened.payload)
        if (receipt.message_id, receipt.verdict, receipt.reason)
        == (entry.message_id, entry.verdict, entry.reason)
    ]
    return answer


async def outbox_record(gateway: Gateway, message_id: UUID, state: SendState) -> OutboxRecord | None:
    """The sender's record of `message_id` once it reached `state`, else None."""
    record = await gateway.outbox.get(message_id)
    return record if record is not None and record.state == state else None


async def acked_empty(exchange: ExchangeHarness, country: str, queue: str) -> None:
    """Wait until `queue` holds no message, neither waiting nor delivered and unacknowledged."""

    async def empty() -> bool:
        return await exchange.held(country, queue) == 0

    await exchange.wait_until(empty, what=f"{country}'s {queue} queue to be acked empty")


async def inject(exchange: ExchangeHarness, country: str, raw: bytes, message_id: UUID) -> None:
    """Publish bytes into `country`'s inbound exchange, as the peer's shovel would."""
    await exchange.broker[country].publish(
        exchange=INBOUND, routing_key=country.lower(), body=raw, message_id=str(message_id)
    )


# -- every type, both ways ------------------------------------------------------------------------


async def test_every_type_crosses_both_ways_verified_audited_acked_and_receipted(
    exchange: ExchangeHarness, gateways: dict[str, Gateway]
) -> None:
    routes = [(country, *route) for country, country_routes in ROUTES.items() for route in country_routes]
    results = await asyncio.gather(
        *(
            gateways[country].send(
                sample(message_type),
                to=recipient,
                sender=sender,
                wait_receipt=True,
                receipt_timeout_s=RECEIPT_WAIT_S,
            )
            for country, message_type, sender, recipient in routes
        )
    )
    assert len(results) == 12
    for (country, message_type, sender, recipient), result in zip(routes, results, strict=True):
        origin, destination = gateways[country], gateways[exchange.peer_of(country)]
        receipt = result.receipt
        assert receipt is not None
        assert (receipt.verdict, receipt.reason) == (Verdict.ACCEPTED, None)
        assert (receipt.message_id, receipt.sha256) == (result.message_id, result.sha256)

        record = await origin.outbox.get(result.message_id)
        assert record is not None
        assert (record.state, record.message_type, record.recipient) == (
            SendState.RECEIPTED,
            message_type,
            recipient,
        )
        [sent] = await entries(origin, result.message_id, EntryKind.SENT)
        assert sent.envelope == record.raw
        [receipt_entry] = await entries(origin, result.message_id, EntryKind.RECEIPT_RECEIVED)
        assert receipt_entry.verdict == Verdict.ACCEPTED
        assert await opened_receipt(exchange, origin, receipt_entry, at_country=country) == receipt

        # The receiver kept the exact bytes sent, and they verify as the sending ministry's.
        [received] = await entries(destination, result.message_id, EntryKind.RECEIVED)
        assert received.envelope == record.raw
        verified = verify_envelope(
            received.envelope,
            trust=exchange.trust,
            agreement=exchange.dev.agreement,
            local_country=exchange.peer_of(country),
        )
        assert (verified.signer.authority_id, verified.envelope.type) == (sender, message_type)
        assert receipt.audit_index == received.index
        assert len(await entries(destination, result.message_id, EntryKind.DELIVERED)) == 1
        [receipt_sent] = await entries(destination, result.message_id, EntryKind.RECEIPT_SENT)
        assert receipt_sent.envelope == receipt_entry.envelope

    for country in ("TJ", "RU"):
        assert await exchange.ministry_deliveries(country) == 6
    # Acked: nothing left in either inbound queue, not even unacknowledged.
    await asyncio.gather(*(acked_empty(exchange, country, INBOUND) for country in ("TJ", "RU")))


# -- an offline consulate -------------------------------------------------------------------------


async def test_offline_consulate_receives_all_100_alerts_once_it_starts(
    exchange: ExchangeHarness, gateways: dict[str, Gateway]
) -> None:
    consulate = Subscription(
        transport=exchange.broker["TJ"],
        agreement=exchange.dev.agreement,
        trust=exchange.trust,
        authority_id=CONSULATE,
        types=CONSULATE_TYPES,
        citizenship="TJ",
        decryptor=exchange.dev.keystore.decryptor(CONSULATE),
    )
    await consulate.declare()
    # The consulate is offline (its queue exists, nobody consumes) while Russia sends 100 alerts.
    russia = gateways["RU"]
    results = await asyncio.gather(
        *(russia.send(sample(CONSULATE_TYPES[n % 2]), to="TJ-MOL", sender="RU-MVD") for n in range(100))
    )
    sent_ids = {result.message_id for result in results}
    assert len(sent_ids) == 100

    async def all_receipted() -> bool:
        return await russia.outbox.outstanding_count() == 0

    await exchange.wait_until(all_receipted, what="receipts for all 100 alerts", timeout_s=30)
    assert await exchange.broker["TJ"].queue_counts(consulate.queue) == (100, 0)

    alerts = await consulate.collect(100, timeout_s=20)
    assert len(alerts) == 100
    assert {alert.message_id for alert in alerts} == sent_ids
    assert {alert.message_type for alert in alerts} == set(CONSULATE_TYPES)
    assert all(alert.citizenship == "TJ" and alert.sender == "RU-MVD" for alert in alerts)
    await acked_empty(exchange, "TJ", consulate.queue)


async def test_subscriber_may_not_subscribe_to_a_type_its_role_may_not_receive(
    exchange: ExchangeHarness,
) -> None:
    # Employer permits go to ministries (agreement: subscribers of employer.permit), not consulates.
    subscription = Subscription(
        transport=exchange.broker["RU"],
        agreement=exchange.dev.agreement,
        trust=exchange.trust,
        authority_id="RU-CONSULATE-DUSHANBE",
        types=["worker.death", "employer.permit"],
    )
    with pytest.raises(PolicyError) as refused:
        await subscription.declare()
    assert refused.value.reason == Reason.POLICY_SUBSCRIBER_NOT_ALLOWED
    # Nothing was declared, not even for the allowed type.
    with pytest.raises(TransportError):
        await exchange.broker["RU"].queue_counts(subscriber_queue("RU-CONSULATE-DUSHANBE"))


# -- rejections -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Forgery:
    """A bad message, who sends it (its gateway tracks it in its outbox) and why it must be refused."""

    sender_country: str
    build: Callable[[ExchangeHarness, Path], SealedMessage]
    reason: Reason


def _flip_signature_byte(exchange: ExchangeHarness, _: Path) -> SealedMessage:
    good = sealed_by(exchange, sample("legislation.change"), sender="TJ-MOL", recipient="RU-MINTRUD")
    # `"signature":"<protected>..<signature>"`: change one character inside the signature value,
    # keeping it valid base64url so that only the signature check can object.
    start = good.raw.index(b"..", good.raw.index(b'"signature":"')) + 2 + 10
    flipped = b"B" if good.raw[start : start + 1] == b"A" else b"A"
    raw = good.raw[:start] + flipped + good.raw[start + 1 :]
    return SealedMessage(envelope=good.envelope, raw=raw, sha256=sha256_hex(raw))


def _untrusted_ca(exchange: ExchangeHarness, workdir: Path) -> SealedMessage:
    rogue = KeyStore(root=workdir / "rogue-keys")
    issued = now() - timedelta(hours=1)
    rogue.init_country("KZ", now=issued)
    rogue.issue("KZ-MOL", "KZ", now=issued)
    moment = now()
    return seal(
        sample("legislation.change"),
        sender="KZ-MOL",
        recipient="RU-MINTRUD",
        signer=rogue.signer("KZ-MOL", at=moment),
        created_at=moment,
    )


def _trusted_ca_but_not_in_agreement(exchange: ExchangeHarness, _: Path) -> SealedMessage:
    outsider = f"TJ-OUTSIDER-{secrets.token_hex(3).upper()}"
    exchange.dev.keystore.issue(outsider, "TJ", now=now() - timedelta(hours=1))
    return sealed_by(exchange, sample("legislation.change"), sender=outsider, recipient="RU-MINTRUD")


def _type_not_allowed(exchange: ExchangeHarness, _: Path) -> SealedMessage:
    # Art. 15.5: deaths are reported by the interior bodies; the labour ministry may not send one.
    return sealed_by(exchange, sample("worker.death"), sender="RU-MINTRUD", recipient="TJ-MOL")


def _schema_invalid(exchange: ExchangeHarness, _: Path) -> SealedMessage:
    payload = payload_to_json(sample("legislation.change"))
    del payload["act_title"]
    moment = now()
    envelope = Envelope.model_validate(
        {
            "id": uuid7(),
            "type": "legislation.change",
            "version": 1,
            "sender": "TJ-MOL",
            "recipient": "RU-MINTRUD",
            "created_at": moment,
            "payload": payload,
        }
    )
    return seal_envelope(envelope, signer=exchange.dev.keystore.signer("TJ-MOL", at=moment))


def _stale(exchange: ExchangeHarness, _: Path) -> SealedMessage:
    return sealed_by(
        exchange,
        sample("legislation.change"),
        sender="TJ-MOL",
        recipient="RU-MINTRUD",
        created_at=now() - timedelta(days=30),
    )


FORGERIES = {
    "bad-signature": Forgery("TJ", _flip_signature_byte, Reason.SIGNATURE_INVALID),
    "unknown-sender-untrusted-ca": Forgery("TJ", _untrusted_ca, Reason.CERT_UNTRUSTED),
    "unknown-sender-not-in-agreement": Forgery(
        "TJ", _trusted_ca_but_not_in_agreement, Reason.POLICY_SENDER_NOT_ALLOWED
    ),
    "type-not-allowed": Forgery("RU", _type_not_allowed, Reason.POLICY_SENDER_NOT_ALLOWED),
    "schema-invalid": Forgery("TJ", _schema_invalid, Reason.SCHEMA_INVALID),
    "stale": Forgery("TJ", _stale, Reason.REPLAY_STALE),
}


async def assert_quarantined(
    exchange: ExchangeHarness, country: str, *, message_id: UUID, raw: bytes, reason: Reason
) -> None:
    quarantined = [
        message
        for message in await exchange.broker[country].peek(QUARANTINE)
        if message.message_id == str(message_id)
    ]
    assert len(quarantined) == 1
    assert quarantined[0].headers["x-reason"] == str(reason)
    assert quarantined[0].headers["x-sha256"] == sha256_hex(raw)
    assert quarantined[0].body == raw


@pytest.mark.parametrize("name", list(FORGERIES))
async def test_rejected_message_is_quarantined_receipted_negatively_and_never_delivered(
    name: str, exchange: ExchangeHarness, gateways: dict[str, Gateway], tmp_path: Path
) -> None:
    forgery = FORGERIES[name]
    receiver_country = exchange.peer_of(forgery.sender_country)
    origin, destination = gateways[forgery.sender_country], gateways[receiver_country]
    sealed = forgery.build(exchange, tmp_path)
    message_id = sealed.envelope.id

    await origin.publish_sealed(sealed)

    # At the sender: a signed negative receipt naming the reason and the bytes it sent.
    [receipt_entry] = await receipts_at(exchange, origin, message_id)
    assert (receipt_entry.verdict, receipt_entry.reason) == (Verdict.REJECTED, str(forgery.reason))
    receipt = await opened_receipt(exchange, origin, receipt_entry, at_country=forgery.sender_country)
    assert (receipt.verdict, receipt.reason, receipt.sha256) == (
        Verdict.REJECTED,
        str(forgery.reason),
        sealed.sha256,
    )
    # The outbox is updated just after the receipt is audited.
    record = await exchange.wait_until(
        lambda: outbox_record(origin, message_id, SendState.REJECTED), what="the outbox to show the rejection"
    )
    assert record.reason == str(forgery.reason)

    # At the receiver: audited as rejected with the original bytes, never as received or delivered.
    [rejected] = await entries(destination, message_id, EntryKind.REJECTED)
    assert (rejected.reason, rejected.envelope) == (str(forgery.reason), sealed.raw)
    assert receipt.audit_index == rejected.index
    assert await entries(destination, message_id, EntryKind.RECEIVED) == []
    assert await entries(destination, message_id, EntryKind.DELIVERED) == []
    await assert_quarantined(
        exchange, receiver_country, message_id=message_id, raw=sealed.raw, reason=forgery.reason
    )
    # The receipt is published after any delivery would have been, so this is final.
    assert await exchange.ministry_deliveries(receiver_country) == 0


async def test_same_id_with_other_bytes_is_a_conflict_and_leaves_the_original_receipted(
    exchange: ExchangeHarness, gateways: dict[str, Gateway]
) -> None:
    tajikistan, russia = gateways["TJ"], gateways["RU"]
    original = await tajikistan.send(
        sample("legislation.change"), to="RU-MINTRUD", wait_receipt=True, receipt_timeout_s=RECEIPT_WAIT_S
    )
    assert original.receipt is not None
    assert original.receipt.verdict == Verdict.ACCEPTED
    # A copy under the same id with other content (another created_at), arriving over the link.
    forged = sealed_by(
        exchange,
        sample("legislation.change"),
        sender="TJ-MOL",
        recipient="RU-MINTRUD",
        message_id=original.message_id,
    )
    assert forged.sha256 != original.sha256
    await inject(exchange, "RU", forged.raw, original.message_id)

    receipts = await receipts_at(exchange, tajikistan, original.message_id, count=2)
    [negative] = [entry for entry in receipts if entry.verdict == Verdict.REJECTED]
    assert negative.reason == Reason.REPLAY_CONFLICT
    assert (await opened_receipt(exchange, tajikistan, negative, at_country="TJ")).sha256 == forged.sha256
    # The sender matches receipts on (id, sha256): the real message stays receipted.
    record = await tajikistan.outbox.get(original.message_id)
    assert record is not None
    assert record.state == SendState.RECEIPTED

    [rejected] = await entries(russia, original.message_id, EntryKind.REJECTED)
    assert (rejected.reason, rejected.envelope) == (str(Reason.REPLAY_CONFLICT), forged.raw)
    await assert_quarantined(
        exchange, "RU", message_id=original.message_id, raw=forged.raw, reason=Reason.REPLAY_CONFLICT
    )
    delivered = await exchange.broker["RU"].peek(exchange.ministry_queue("RU"))
    assert [message.body for message in delivered] == [record.raw]


# -- duplicates -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["publish_sealed-twice", "inbound-twice"])
async def test_message_delivered_twice_is_delivered_once_and_receipted_identically(
    path: str, exchange: ExchangeHarness, gateways: dict[str, Gateway]
) -> None:
    tajikistan, russia = gateways["TJ"], gateways["RU"]
    sealed = sealed_by(exchange, sample("legislation.change"), sender="TJ-MOL", recipient="RU-MINTRUD")
    message_id = sealed.envelope.id
    for _ in range(2):
        if path == "publish_sealed-twice":
            await tajikistan.publish_sealed(sealed)
        else:
            await inject(exchange, "RU", sealed.raw, message_id)

    async def both_answered() -> list[AuditEntry]:
        arrivals = await receipt_arrivals(tajikistan, message_id)
        return arrivals if len(arrivals) >= 2 else []

    first, second = await exchange.wait_until(both_answered, what="a receipt for each copy")
    assert first.envelope == second.envelope  # byte-identical evidence for the duplicate
    [answer] = await entries(tajikistan, message_id, EntryKind.RECEIPT_RECEIVED)
    assert (await opened_receipt(exchange, tajikistan, answer, at_country="TJ")).verdict == Verdict.ACCEPTED
    for kind in (EntryKind.RECEIVED, EntryKind.DELIVERED, EntryKind.RECEIPT_SENT):
        assert len(await entries(russia, message_id, kind)) == 1, kind
    delivered = await exchange.broker["RU"].peek(exchange.ministry_queue("RU"))
    assert [message.body for message in delivered] == [sealed.raw]
    if path == "publish_sealed-twice":
        await exchange.wait_until(
            lambda: outbox_record(tajikistan, message_id, SendState.RECEIPTED),
            what="the outbox to show the receipt",
        )


# -- receipt deadline -----------------------------------------------------------------------------


async def test_message_without_receipt_by_its_deadline_is_resent_with_the_same_id(
    exchange: ExchangeHarness,
) -> None:
    with capture_logs() as logs:
        tajikistan = await exchange.new_gateway(
            "TJ", receipt_deadlines_s={"*": 0.5}, resend_check_interval_s=0.2
        )
        russia = await exchange.new_gateway("RU")
        await russia.stop()  # Russia's gateway is down: nothing answers
        # legislation.change has no deadline of its own, so the "*" override applies to it.
        sent = await tajikistan.send(sample("legislation.change"), to="RU-MINTRUD")

        async def resent() -> bool:
            record = await tajikistan.outbox.get(sent.message_id)
            return record is not None and record.attempts > 1

        await exchange.wait_until(resent, what="a re-send after the receipt deadline")
        overdue = [
            event
            for event in logs
            if event["event"] == "receipt.overdue" and event.get("message_id") == str(sent.message_id)
        ]
        assert overdue
        assert overdue[0]["log_level"] == "warning"
        assert overdue[0]["type"] == "legislation.change"
        assert overdue[0]["peer"] == "RU-MINTRUD"

        await russia.start()

        async def every_copy_receipted() -> bool:
            record = await tajikistan.outbox.get(sent.message_id)
            assert record is not None
            answered = await receipt_arrivals(tajikistan, sent.message_id)
            return record.state == SendState.RECEIPTED and len(answered) == record.attempts

        await exchange.wait_until(every_copy_receipted, what="a receipt for every copy sent")

    record = await tajikistan.outbox.get(sent.message_id)
    assert record is not None
    assert record.attempts > 1
    answered = await receipt_arrivals(tajikistan, sent.message_id)
    assert len({entry.envelope for entry in answered}) == 1
    # Every copy carried the same id and bytes; Russia accepted and delivered the first, once.
    [received] = await entries(russia, sent.message_id, EntryKind.RECEIVED)
    assert received.envelope == record.raw
    for kind in (EntryKind.DELIVERED, EntryKind.RECEIPT_SENT):
        assert len(await entries(russia, sent.message_id, kind)) == 1, kind
    assert await exchange.ministry_deliveries("RU") == 1


# -- quarantine from the command line -------------------------------------------------------------


async def run_cli(*args: str, input_text: str | None = None) -> Result:
    # The CLI runs its own event loop, so it gets a thread of its own; wide, so ids are not wrapped.
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, app, list(args), input=input_text, env={"COLUMNS": "250"})


async def test_quarantine_commands_list_show_requeue_and_purge(
    exchange: ExchangeHarness, gateways: dict[str, Gateway], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CLI points structlog at the stdout CliRunner lends it and closes afterwards; inside this
    # process the gateways keep logging, so the CLI may not reconfigure logging, and nothing prints.
    monkeypatch.setattr("broker.cli.common.configure_logging", lambda *_, **__: None)
    with capture_logs():
        await _quarantine_commands(exchange, gateways, tmp_path)


async def _quarantine_commands(
    exchange: ExchangeHarness, gateways: dict[str, Gateway], tmp_path: Path
) -> None:
    tajikistan, russia = gateways["TJ"], gateways["RU"]
    sealed = _flip_signature_byte(exchange, tmp_path)
    message_id = sealed.envelope.id
    await tajikistan.publish_sealed(sealed)
    await receipts_at(exchange, tajikistan, message_id)
    where = (
        "--country",
        "RU",
        "--config",
        str(exchange.dev.settings["RU"].state_dir / "ru" / "gateway.toml"),
    )

    listing = await run_cli("quarantine", "list", *where)
    assert listing.exit_code == 0, listing.output
    [row] = [line for line in listing.output.splitlines() if str(message_id) in line]
    assert str(Reason.SIGNATURE_INVALID) in row
    assert listing.output.splitlines()[0].split("\t")[:2] == ["message_id", "reason"]  # a pipe: no table art

    as_json = await run_cli("quarantine", "list", *where, "--json")
    assert as_json.exit_code == 0, as_json.output
    [listed] = [item for item in json.loads(as_json.output) if item["message_id"] == str(message_id)]
    assert listed["reason"] == str(Reason.SIGNATURE_INVALID)
    assert listed["bytes"] == len(sealed.raw)

    # The sender follows it: its own outbox and audit trail, as JSON for a script.
    tj_settings = tmp_path / "tj.toml"
    write_settings_file(tj_settings, exchange.settings("TJ"))
    followed = await run_cli(
        "status", str(message_id), "--country", "TJ", "--config", str(tj_settings), "--json"
    )
    assert followed.exit_code == 0, followed.output
    trail = json.loads(followed.output)
    assert trail["outbox"]["state"] == "rejected"
    assert trail["outbox"]["reason"] == str(Reason.SIGNATURE_INVALID)
    assert [entry["kind"] for entry in trail["trail"]] == ["sent", "receipt-received"]

    shown = await run_cli("quarantine", "show", str(message_id), *where)
    assert shown.exit_code == 0, shown.output
    assert str(Reason.SIGNATURE_INVALID) in shown.output
    assert sealed.raw.decode("utf-8") in shown.output

    kept = await run_cli("quarantine", "purge", *where, input_text="n\n")
    assert kept.exit_code != 0
    assert await exchange.ready("RU", QUARANTINE) == 1

    requeued = await run_cli("quarantine", "requeue", str(message_id), *where)
    assert requeued.exit_code == 0, requeued.output

    # Back on the inbound queue, the running gateway judges it again: rejected a second time.
    async def rejected_twice() -> bool:
        return len(await entries(russia, message_id, EntryKind.REJECTED)) == 2

    await exchange.wait_until(rejected_twice, what="the requeued message to be judged again")

    async def back_in_quarantine() -> bool:
        return await exchange.ready("RU", QUARANTINE) == 1

    await exchange.wait_until(back_in_quarantine, what="the message to be quarantined again")

    purged = await run_cli("quarantine", "purge", "--yes", *where)
    assert purged.exit_code == 0, purged.output
    assert "purged 1 messages" in purged.output
    assert await exchange.ready("RU", QUARANTINE) == 0
