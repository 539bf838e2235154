"""The submission channel over the real RabbitMQ: ministry systems hand messages to the running gateway.

Each ministry connects as its own RabbitMQ user; RabbitMQ vouches for `user_id`, the gateway maps it
to the authorities that user may act for. Accepted submissions are sent and their receipts passed
on; everything else is refused with a reason code, and the gateway keeps going.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aio_pika
import pytest
import pytest_asyncio

from broker.audit import EntryKind
from broker.core.catalogue import payload_to_json, sample_payloads
from broker.core.errors import Reason, TransportError
from broker.core.sealing import seal
from broker.exchange.gateway import Gateway
from broker.exchange.submission import (
    Accepted,
    ReceiptNews,
    Refused,
    Submission,
    encode_submission,
    parse_answer,
    sealed_submission,
)
from broker.exchange.submitter import SubmissionClient
from broker.exchange.topology import SUBMIT
from broker.exchange.transport import RabbitTransport

if TYPE_CHECKING:
    from tests.support.exchange import ExchangeHarness

pytestmark = pytest.mark.rabbitmq

ANSWER_WAIT_S = 30.0
Answer = Accepted | Refused | ReceiptNews
Ministry = Callable[[str], Awaitable[SubmissionClient]]


def death_notice(request_id: str, **changes: Any) -> Submission:
    fields: dict[str, Any] = {
        "request_id": request_id,
        "type": "worker.death",
        "to": "TJ-MOL",
        "payload": payload_to_json(sample_payloads()["worker.death"]),
        **changes,
    }
    return Submission.model_validate(fields)


def login(exchange: ExchangeHarness, authority: str) -> tuple[str, str]:
    """(user, URL) of `authority`'s ministry system on its country's broker."""
    broker = exchange.dev.brokers[authority[:2]]
    user = broker.submitter_user(authority)
    return user, broker.uri_for(user=user, password=exchange.dev.passwords[user])


@pytest_asyncio.fixture
async def ministry(exchange: ExchangeHarness) -> AsyncIterator[Ministry]:
    """Connect as a ministry's own RabbitMQ user; every connection is closed after the test."""
    clients: list[SubmissionClient] = []

    async def connect(authority: str) -> SubmissionClient:
        user, url = login(exchange, authority)
        client = await SubmissionClient.connect(url=url, user=user, country=authority[:2])
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.close()


async def answer(client: SubmissionClient, request_id: str) -> Answer:
    got = await client.answer(request_id, timeout_s=ANSWER_WAIT_S)
    assert got is not None, f"no answer to {request_id}"
    return got


async def accepted(client: SubmissionClient, request_id: str) -> Accepted:
    got = await answer(client, request_id)
    assert isinstance(got, Accepted), got
    return got


async def refusal(client: SubmissionClient, request_id: str) -> Refused:
    got = await answer(client, request_id)
    assert isinstance(got, Refused), got
    return got


async def publish_raw(
    transport: RabbitTransport, country: str, body: bytes, *, user_id: str | None
) -> Answer:
    """Publish `body` as it is to `country`'s submit exchange and read the gateway's answer."""
    requests = await transport.requests()
    try:
        await requests.publish(
            exchange=SUBMIT,
            routing_key=country.lower(),
            body=body,
            message_id="raw",
            correlation_id="raw",
            user_id=user_id,
        )
        reply = await asyncio.wait_for(requests.answers.get(), ANSWER_WAIT_S)
        assert reply.correlation_id == "raw"
        return parse_answer(reply.body)
    finally:
        await requests.close()


async def raw_submission(
    exchange: ExchangeHarness, authority: str, body: bytes, *, user_id: str | None = "own"
) -> Answer:
    """`body` as `authority`'s ministry user (with its own user_id unless told) and the answer."""
    user, url = login(exchange, authority)
    transport = await RabbitTransport.connect(url=url, name="test-raw-submitter")
    try:
        return await publish_raw(
            transport, authority[:2], body, user_id=user if user_id == "own" else user_id
        )
    finally:
        await transport.close()


async def sent_entries(gateway: Gateway, answer: Accepted) -> int:
    return len(await gateway.audit.find(answer.message_id, kinds=[EntryKind.SENT]))


async def test_a_submission_is_sent_and_its_receipt_passed_on(
    exchange: ExchangeHarness, gateways: dict[str, Gateway], ministry: Ministry
) -> None:
    client = await ministry("RU-MVD")
    await client.submit(death_notice("first"))

    taken = await accepted(client, "first")
    news = await answer(client, "first")

    assert (taken.type, taken.sender, taken.to, taken.repeated) == ("worker.death", "RU-MVD", "TJ-MOL", False)
    assert isinstance(news, ReceiptNews)
    assert (news.message_id, news.verdict, news.final) == (taken.message_id, "accepted", True)
    record = await gateways["RU"].outbox.get(taken.message_id)
    assert record is not None
    assert (record.sha256, record.state) == (taken.sha256, "receipted")
    assert len(await gateways["TJ"].audit.find(taken.message_id, kinds=[EntryKind.RECEIVED])) == 1
    assert gateways["RU"].submitters == (login(exchange, "RU-MVD")[0], login(exchange, "RU-MINTRUD")[0])


@pytest.mark.parametrize(
    ("sender", "reason", "named"),
    [
        # RU-MINTRUD's system names RU-MVD as the sender: not an authority it acts for.
        ("RU-MVD", Reason.POLICY_SUBMITTER_NOT_ALLOWED, "RU-MVD"),
        # RU-MINTRUD as itself, but deaths are the interior ministry's to report.
        (None, Reason.POLICY_SENDER_NOT_ALLOWED, "Art. 15.5"),
    ],
)
async def test_a_ministry_submits_only_as_itself_and_within_the_agreement(
    exchange: ExchangeHarness,
    gateways: dict[str, Gateway],
    ministry: Ministry,
    sender: str | None,
    reason: Reason,
    named: str,
) -> None:
    mintrud = await ministry("RU-MINTRUD")
    await mintrud.submit(death_notice("refused", sender=sender))

    refused = await refusal(mintrud, "refused")

    assert refused.reason == reason
    assert named in refused.diagnostic
    assert await gateways["RU"].outbox.records() == []


async def test_a_forged_user_id_is_refused_by_rabbitmq(
    exchange: ExchangeHarness, gateways: dict[str, Gateway]
) -> None:
    mvd_user, _ = login(exchange, "RU-MVD")
    body = encode_submission(death_notice("forged"))

    with pytest.raises(TransportError) as caught:
        await raw_submission(exchange, "RU-MINTRUD", body, user_id=mvd_user)

    assert caught.value.reason is Reason.TRANSPORT_FORBIDDEN
    assert "user_id" in caught.value.diagnostic
    assert await exchange.held("RU", SUBMIT) == 0  # refused by the broker: never queued
    assert await gateways["RU"].outbox.records() == []


@pytest.mark.parametrize("user_id", [None, "gateway"])
async def test_a_submission_from_no_known_submitter_is_refused(
    exchange: ExchangeHarness, gateways: dict[str, Gateway], user_id: str | None
) -> None:
    body = encode_submission(death_notice("nobody"))
    if user_id is None:
        got = await raw_submission(exchange, "RU-MVD", body, user_id=None)
    else:  # the gateway's own user may write to `submit`, but submits for no authority
        user = exchange.dev.brokers["RU"].gateway_user
        got = await publish_raw(exchange.broker["RU"], "RU", body, user_id=user)

    assert isinstance(got, Refused), got
    assert got.reason == Reason.POLICY_SUBMITTER_NOT_ALLOWED
    assert await gateways["RU"].outbox.records() == []


async def test_the_same_request_id_sends_one_message(
    exchange: ExchangeHarness, gateways: dict[str, Gateway], ministry: Ministry
) -> None:
    client = await ministry("RU-MVD")
    await client.submit(death_notice("twice"))
    await client.submit(death_notice("twice"))

    first = await accepted(client, "twice")
    second = await answer(client, "twice")
    if isinstance(second, ReceiptNews):  # the receipt of the first overtook the second answer
        second = await answer(client, "twice")
    assert isinstance(second, Accepted), second
    assert (second.message_id, second.sha256, second.repeated) == (first.message_id, first.sha256, True)

    await exchange.wait_until(
        lambda: gateways["RU"].outbox.get(first.message_id),
        what="the outbox row",
    )

    async def receipted() -> bool:
        record = await gateways["RU"].outbox.get(first.message_id)
        return record is not None and record.state == "receipted"

    await exchange.wait_until(receipted, what="the receipt")
    # Asked again after the receipt: the same message, and its verdict at once.
    again = await ministry("RU-MVD")
    await again.submit(death_notice("twice"))
    third = await accepted(again, "twice")
    verdict = await answer(again, "twice")

    assert (third.message_id, third.repeated) == (first.message_id, True)
    assert isinstance(verdict, ReceiptNews)
    assert verdict.verdict == "accepted"
    assert await sent_entries(gateways["RU"], first) == 1
    assert len(await gateways["RU"].outbox.records()) == 1
    assert len(await gateways["TJ"].audit.find(first.message_id, kinds=[EntryKind.RECEIVED])) == 1


async def test_the_same_request_id_with_other_content_is_refused(
    exchange: ExchangeHarness, gateways: dict[str, Gateway], ministry: Ministry
) -> None:
    client = await ministry("RU-MVD")
    await client.submit(death_notice("reused"))
    first = await accepted(client, "reused")
    await client.submit(death_notice("reused", to="TJ-MVD"))

    refused = await answer(client, "reused")
    if isinstance(refused, ReceiptNews):
        refused = await answer(client, "reused")

    assert isinstance(refused, Refused), refused
    assert refused.reason == Reason.SUBMISSION_REQUEST_REUSED
    assert str(first.message_id) in refused.diagnostic
    assert [record.message_id for record in await gateways["RU"].outbox.records()] == [first.message_id]


async def test_the_same_request_id_from_another_submitter_is_its_own(
    exchange: ExchangeHarness, gateways: dict[str, Gateway], ministry: Ministry
) -> None:
    mvd, mintrud = await ministry("RU-MVD"), await ministry("RU-MINTRUD")
    report = Submission.model_validate(
        {
            "request_id": "shared",
            "type": "labour_market.report",
            "to": "TJ-MOL",
            "payload": payload_to_json(sample_payloads()["labour_market.report"]),
        }
    )
    await mvd.submit(death_notice("shared"))
    await mintrud.submit(report)

    first, second = await accepted(mvd, "shared"), await accepted(mintrud, "shared")

    assert first.message_id != second.message_id
    assert (first.sender, second.sender) == ("RU-MVD", "RU-MINTRUD")


def hostile_bodies() -> list[tuple[str, bytes, Reason]]:
    good = json.loads(encode_submission(death_notice("hostile")))
    death = dict(good["payload"])
    del death["date_of_death"]
    return [
        ("not JSON", b"\x00\x01 not json", Reason.SUBMISSION_MALFORMED),
        ("an array", b"[1, 2, 3]", Reason.SUBMISSION_MALFORMED),
        ("duplicate keys", b'{"request_id": "a", "request_id": "b"}', Reason.SUBMISSION_MALFORMED),
        ("deep nesting", b'{"payload":' + b"[" * 5000 + b"]" * 5000 + b"}", Reason.SUBMISSION_MALFORMED),
        ("unknown member", json.dumps({**good, "priority": "urgent"}).encode(), Reason.SUBMISSION_MALFORMED),
        ("both kinds", json.dumps({**good, "sealed": "AAAA"}).encode(), Reason.SUBMISSION_MALFORMED),
        ("bad base64", b'{"request_id": "h", "sealed": "%%%"}', Reason.SUBMISSION_MALFORMED),
        (
            "not an envelope",
            json.dumps({"request_id": "h", "sealed": "e30="}).encode(),
            Reason.SIGNATURE_MISSING,
        ),
        ("schema", json.dumps({**good, "payload": death}).encode(), Reason.SCHEMA_INVALID),
        ("unknown type", json.dumps({**good, "type": "worker.birth"}).encode(), Reason.SCHEMA_UNKNOWN_TYPE),
        (
            "unknown recipient",
            json.dumps({**good, "to": "TJ-NOBODY"}).encode(),
            Reason.POLICY_RECIPIENT_UNKNOWN,
        ),
        ("same country", json.dumps({**good, "to": "RU-MINTRUD"}).encode(), Reason.POLICY_SENDER_NOT_ALLOWED),
    ]


async def test_hostile_submissions_are_refused_with_reason_codes_and_the_gateway_goes_on(
    exchange: ExchangeHarness, gateways: dict[str, Gateway], ministry: Ministry
) -> None:
    for what, body, reason in hostile_bodies():
        got = await raw_submission(exchange, "RU-MVD", body)
        assert isinstance(got, Refused), what
        assert got.reason == reason, (what, got)
    assert await gateways["RU"].outbox.records() == []

    client = await ministry("RU-MVD")
    await client.submit(death_notice("after"))
    assert (await accepted(client, "after")).sender == "RU-MVD"


async def test_an_oversized_submission_is_refused_unread(exchange: ExchangeHarness) -> None:
    await exchange.new_gateway("RU", max_message_bytes=1024)  # takes bodies up to about 66 KiB
    body = b'{"request_id": "big", "padding": "' + b"x" * 100_000 + b'"}'

    got = await raw_submission(exchange, "RU-MVD", body)

    assert isinstance(got, Refused)
    assert got.reason == Reason.SUBMISSION_OVERSIZED


async def test_a_gateway_bug_on_one_submission_is_refused_not_looped(
    exchange: ExchangeHarness,
    gateways: dict[str, Gateway],
    ministry: Ministry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(gateways["RU"]._sender, "seal_outgoing", broken)
    client = await ministry("RU-MVD")
    await client.submit(death_notice("bug"))

    refused = await refusal(client, "bug")

    assert refused.reason == Reason.INTERNAL_ERROR
    # Acked: a requeued submission would always be held (ready or delivered again).
    await exchange.wait_until(lambda: _acked(exchange, "RU", SUBMIT), what="the submission to be acked")


async def test_an_answer_goes_only_to_a_direct_reply_to_address(
    exchange: ExchangeHarness, gateways: dict[str, Gateway]
) -> None:
    # With `reply_to` naming a queue of the vhost, an answer through the default exchange would land
    # in it: here the RU ministry's own delivery queue. The gateway sends it, but answers nobody.
    user, url = login(exchange, "RU-MVD")
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        target = await channel.get_exchange(SUBMIT, ensure=False)
        await target.publish(
            aio_pika.Message(
                encode_submission(death_notice("misdirected")),
                user_id=user,
                reply_to=exchange.ministry_queue("RU"),
                correlation_id="misdirected",
            ),
            routing_key="ru",
        )
    finally:
        await connection.close()

    records = await exchange.wait_until(gateways["RU"].outbox.records, what="the submission to be sent")
    await exchange.wait_until(lambda: _acked(exchange, "RU", SUBMIT), what="the submission to be acked")

    assert len(records) == 1
    assert await exchange.ministry_deliveries("RU") == 0


async def _acked(exchange: ExchangeHarness, country: str, queue: str) -> bool:
    return await exchange.held(country, queue) == 0


async def test_a_ministry_may_submit_an_envelope_it_sealed_itself(
    exchange: ExchangeHarness, gateways: dict[str, Gateway], ministry: Ministry
) -> None:
    moment = datetime.now(UTC)
    sealed = seal(
        sample_payloads()["employer.permit"],
        sender="RU-MVD",
        recipient="TJ-MOL",
        signer=exchange.dev.keystore.signer("RU-MVD", at=moment),
        created_at=moment,
    )
    client = await ministry("RU-MVD")
    await client.submit(sealed_submission("own-seal", sealed.raw))

    taken = await accepted(client, "own-seal")
    news = await answer(client, "own-seal")

    assert (taken.message_id, taken.sha256) == (sealed.envelope.id, sealed.sha256)
    assert isinstance(news, ReceiptNews)
    assert news.verdict == "accepted"
    received = await gateways["TJ"].audit.find(sealed.envelope.id, kinds=[EntryKind.RECEIVED])
    assert [entry.envelope for entry in received] == [sealed.raw]  # the ministry's bytes, unchanged


async def test_an_envelope_sealed_by_another_authority_or_spoiled_is_refused(
    exchange: ExchangeHarness, gateways: dict[str, Gateway], ministry: Ministry
) -> None:
    moment = datetime.now(UTC)

    def sealed_as(sender: str, message_type: str, *, at: datetime = moment) -> bytes:
        return seal(
            sample_payloads()[message_type],
            sender=sender,
            recipient="TJ-MOL",
            signer=exchange.dev.keystore.signer(sender, at=at),
            created_at=at,
        ).raw

    report = sealed_as("RU-MINTRUD", "labour_market.report")
    spoiled = report.replace(b'"RU-MINTRUD"', b'"RU-MVD"', 1)
    stale = sealed_as("RU-MVD", "employer.permit", at=moment - timedelta(days=30))
    in_clear = sealed_as("RU-MVD", "worker.death")  # personal data must be sealed for the recipient
    client = await ministry("RU-MVD")
    cases = {
        "other": (report, Reason.POLICY_SUBMITTER_NOT_ALLOWED),
        "spoiled": (spoiled, Reason.SIGNATURE_INVALID),
        "stale": (stale, Reason.REPLAY_STALE),
        "clear": (in_clear, Reason.PAYLOAD_NOT_SEALED),
    }
    for request_id, (raw, _) in cases.items():
        await client.submit(sealed_submission(request_id, raw))

    for request_id, (_, reason) in cases.items():
        assert (await refusal(client, request_id)).reason == reason, request_id
    assert await gateways["RU"].outbox.records() == []
