"""Bytes whose message id cannot be read are answered by their SHA-256, over the real RabbitMQ link.

Issue 17 item 5: a body failing strict parsing (duplicate keys, deep nesting, bytes that are not
UTF-8, over the size limit) was audited and quarantined but never answered, although the README
promised a negative receipt for every rejection. Such bytes can only have come over the link from the
peer, so the receiving gateway now answers them with a signed `receipt.batch` line keyed by their
SHA-256 alone; the sender finds its message by that hash in its outbox and settles it as rejected.
Bytes the sender never sent (someone wrote into its outbound queue) are reported, not settled.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

from broker.audit import AuditEntry, EntryKind
from broker.audit.receipt_refs import batch_of
from broker.core.catalogue.receipt import UnreadableLine
from broker.core.catalogue.samples import sample_payloads
from broker.core.errors import Reason
from broker.core.sealing import MAX_MESSAGE_BYTES, SealedMessage, seal
from broker.exchange.gateway import Gateway
from broker.exchange.topology import OUTBOUND
from broker.state.outbox import OutboxRecord, SendState
from tests.support.exchange import ExchangeHarness

pytestmark = pytest.mark.rabbitmq


def _legislation(exchange: ExchangeHarness) -> SealedMessage:
    return seal(
        sample_payloads()["legislation.change"],
        sender="TJ-MOL",
        recipient="RU-MINTRUD",
        signer=exchange.dev.keystore.signer("TJ-MOL"),
        created_at=datetime.now(UTC),
    )


def _spoiled(change: Callable[[bytes], bytes]) -> Callable[[SealedMessage], bytes]:
    def spoil(sealed: SealedMessage) -> bytes:
        body = change(sealed.raw)
        assert body != sealed.raw
        return body

    return spoil


# Each way the bytes of a message TJ sends can fail RU's strict parsing, and the reason RU gives.
UNREADABLE: dict[str, tuple[Callable[[SealedMessage], bytes], Reason]] = {
    "duplicate keys": (_spoiled(lambda raw: raw.replace(b'"type":', b'"type":"x","type":', 1)), Reason.MESSAGE_MALFORMED),
    "deep nesting": (lambda _: b"[" * 30_000 + b"]" * 30_000, Reason.MESSAGE_MALFORMED),
    "not UTF-8": (_spoiled(lambda raw: raw.replace(b'"sender":"TJ-MOL"', b'"sender":"TJ-MOL\xff"')), Reason.MESSAGE_MALFORMED),
    "over the size limit": (
        _spoiled(lambda raw: raw[:-1] + b',"zz":"' + b"a" * MAX_MESSAGE_BYTES + b'"}'),
        Reason.MESSAGE_OVERSIZED,
    ),
}  # fmt: skip


async def _unreadable_answer(gateway: Gateway, sha256: str) -> UnreadableLine | None:
    """The signed answer to bytes with this hash among the receipts `gateway` received."""
    async for entry in gateway.audit.entries():
        found = batch_of(entry.envelope) if entry.kind is EntryKind.RECEIPT_RECEIVED else None
        for line in found[1].unreadable if found is not None else ():
            if line.sha256 == sha256:
                return line
    return None


async def _rejected(gateway: Gateway, reason: Reason) -> AuditEntry | None:
    found = [
        entry
        async for entry in gateway.audit.entries()
        if entry.kind is EntryKind.REJECTED and entry.reason == str(reason)
    ]
    return found[0] if found else None


@pytest.mark.parametrize("spoil", list(UNREADABLE))
async def test_bytes_the_peer_cannot_read_are_answered_by_their_sha256_and_settle_the_message(
    exchange: ExchangeHarness, gateways: dict[str, Gateway], spoil: str
) -> None:
    tajikistan, russia = gateways["TJ"], gateways["RU"]
    make, reason = UNREADABLE[spoil]
    honest = _legislation(exchange)
    body = make(honest)
    sha256 = hashlib.sha256(body).hexdigest()
    # TJ sends bytes RU cannot parse, through its own send path: outbox, audit, publish.
    await tajikistan.publish_sealed(SealedMessage(envelope=honest.envelope, raw=body, sha256=sha256))

    async def settled() -> OutboxRecord | None:
        record = await tajikistan.outbox.get(honest.envelope.id)
        return record if record is not None and record.state is SendState.REJECTED else None

    record = await exchange.wait_until(settled, what="the sender's message settled as rejected", timeout_s=30)
    assert record.reason == str(reason)
    rejected = await _rejected(russia, reason)
    assert rejected is not None
    assert rejected.message_id is None  # RU could not read the id
    answer = await _unreadable_answer(tajikistan, sha256)
    assert answer is not None
    assert (answer.reason, answer.audit_index) == (str(reason), rejected.index)
    assert await russia.outbox.outstanding_count() == 0  # RU sent nothing of its own


async def test_unreadable_bytes_the_sender_never_sent_are_reported_not_settled(
    exchange: ExchangeHarness, gateways: dict[str, Gateway]
) -> None:
    tajikistan, russia = gateways["TJ"], gateways["RU"]
    body = b'{"id":"x","id":"y"} written into outbound.ru by someone else'
    sha256 = hashlib.sha256(body).hexdigest()
    with capture_logs() as logs:
        await exchange.broker["TJ"].publish(exchange=OUTBOUND, routing_key="ru", body=body, message_id="junk")
        answer = await exchange.wait_until(
            lambda: _unreadable_answer(tajikistan, sha256), what="RU's answer to the junk", timeout_s=30
        )

        async def reported() -> list[MutableMapping[str, Any]]:  # logged just after the answer is kept
            return [event for event in logs if event["event"] == "receipt.unknown_body"]

        events = await exchange.wait_until(reported, what="TJ's report of the unknown body", timeout_s=30)
    assert answer.reason == str(Reason.MESSAGE_MALFORMED)
    assert [(event["sha256"], event["log_level"]) for event in events] == [(sha256, "warning")]
    assert await tajikistan.outbox.records() == []
    assert await _rejected(russia, Reason.MESSAGE_MALFORMED) is not None
