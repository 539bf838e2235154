"""The sending side of a gateway: seal, record, publish, re-send when overdue, and take receipts back.

Order of durable steps for a message we send: key-vault entry (personal data) → outbox row (the
durable intent the resend loop acts on) → audit SENT → publish with confirm → outbox `confirmed`.
A receipt coming back is audited, its checkpoint witnessed, then the outbox row is settled.

Re-sending (`resending.Resending`) neither piles up copies nor hammers a silent peer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypedDict, Unpack
from uuid import UUID

from broker.audit import EntryDraft, EntryKind
from broker.audit.receipt_refs import batch_drafts
from broker.core.catalogue import Payload
from broker.core.catalogue.receipt import (
    AnyReceipt,
    Receipt,
    ReceiptBatch,
    UnreadableLine,
    Verdict,
    receipts_in,
)
from broker.core.errors import LocalError, PolicyError, Reason
from broker.core.ids import uuid7
from broker.core.sealing import OpenedMessage, SealedMessage, seal
from broker.exchange.gateway.context import GatewayContext, sent_draft
from broker.exchange.gateway.resending import Resending
from broker.exchange.gateway.witnessing import Witnessing
from broker.state.outbox import OutboxRecord, SendState

# Negative receipts that do not end a message: it stays outstanding and is re-sent at its deadline.
# The peer could not open what reached it, but the fault need not be in the bytes we signed.
# (`crl.stale`: the receiver lacks a current CRL of ours; once it has one, the re-send passes.)
RETRYABLE_REJECTIONS = frozenset({str(Reason.PAYLOAD_UNDECRYPTABLE), str(Reason.CRL_STALE)})


# Told of each receipt for bytes we sent, and whether it ends the message (not a retryable rejection).
ReceiptObserver = Callable[[Receipt, bool], Awaitable[None]]


class SendOptions(TypedDict, total=False):
    """How to send: `sender` signs (default: the one authority allowed to send the type); with
    `wait_receipt` the call returns once the receipt arrived, or raises after `receipt_timeout_s`
    (default: the type's receipt deadline)."""

    sender: str | None
    wait_receipt: bool
    receipt_timeout_s: float | None
    correlation_id: UUID | None


@dataclass(frozen=True)
class SendResult:
    message_id: UUID
    sha256: str
    receipt: Receipt | None


class Sender:
    def __init__(self, ctx: GatewayContext, *, witnessing: Witnessing) -> None:
        self._ctx = ctx
        self._witnessing = witnessing
        self._waiters: dict[UUID, asyncio.Future[Receipt]] = {}
        self._observers: list[ReceiptObserver] = []
        self._resending = Resending(ctx)
        self._queued_at = self._resending.queued_at

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._resending.start()

    async def stop_resending(self) -> None:
        await self._resending.stop()

    def cancel_waiters(self) -> None:
        for waiter in self._waiters.values():
            waiter.cancel()

    # -- sending -------------------------------------------------------------------------------
    async def send(self, payload: Payload, *, to: str, **options: Unpack[SendOptions]) -> SendResult:
        ctx = self._ctx
        sender = options.get("sender") or self._default_sender(payload.MESSAGE_TYPE, to)
        sealed, sealed_key = self.seal_outgoing(
            payload, to=to, sender=sender, correlation_id=options.get("correlation_id")
        )
        waiter: asyncio.Future[Receipt] | None = None
        if options.get("wait_receipt", False):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters[sealed.envelope.id] = waiter
        try:
            await self.record_and_publish(sealed, sealed_key=sealed_key)
            if waiter is None:
                return SendResult(message_id=sealed.envelope.id, sha256=sealed.sha256, receipt=None)
            limit = options.get("receipt_timeout_s")
            if limit is None:
                limit = ctx.settings.receipt_deadline(payload.MESSAGE_TYPE).total_seconds()
            receipt = await asyncio.wait_for(waiter, limit)
            return SendResult(message_id=sealed.envelope.id, sha256=sealed.sha256, receipt=receipt)
        finally:
            self._waiters.pop(sealed.envelope.id, None)

    def seal_outgoing(
        self,
        payload: Payload,
        *,
        to: str,
        sender: str,
        correlation_id: UUID | None = None,
        message_id: UUID | None = None,
    ) -> tuple[SealedMessage, str | None]:
        """Check the agreement lets `sender` (one of ours) send this to `to`, then seal it (with a
        data key wrapped for the recipient when the payload is personal). Nothing is recorded yet."""
        ctx = self._ctx
        try:
            # Under the agreement with the recipient's country, in force today.
            ctx.agreements.check_send(
                message_type=payload.MESSAGE_TYPE, sender_id=sender, recipient_id=to, at=ctx.clock()
            )
        except PolicyError as refused:
            raise LocalError(
                refused.reason, f"refusing to send: {refused.diagnostic}", article=refused.article
            ) from None
        if ctx.country_of(sender) != ctx.country:
            raise LocalError(Reason.POLICY_SENDER_NOT_ALLOWED, f"{sender} does not belong to {ctx.country}")
        message_id = message_id or uuid7()
        data_key, sealed_key = None, None
        if ctx.personal is not None and payload.PERSONAL:
            data_key, sealed_key = ctx.personal.wrap_for_sending(
                message_id=message_id, sender=sender, recipient=to, trust=ctx.trust, at=ctx.clock()
            )
        sealed = seal(
            payload,
            sender=sender,
            recipient=to,
            signer=ctx.signer_for(sender),
            created_at=ctx.clock(),
            message_id=message_id,
            correlation_id=correlation_id,
            data_key=data_key,
        )
        return sealed, sealed_key

    def watch_receipts(self, observer: ReceiptObserver) -> None:
        """Call `observer(receipt, final)` for each receipt that answers bytes we sent."""
        self._observers.append(observer)

    async def record_and_publish(self, sealed: SealedMessage, *, sealed_key: str | None = None) -> None:
        ctx = self._ctx
        envelope = sealed.envelope
        now = ctx.clock()
        if sealed_key is not None and ctx.personal is not None:
            await ctx.personal.vault.put(envelope.id, sealed_key, at=now)
        # The outbox row first: it is the durable intent the resend loop acts on. A crash before the
        # `sent` entry is repaired there (`_audit_sent_once`); the other order left `sent` entries
        # for messages that never left and never would.
        await ctx.outbox.record_sent(
            message_id=envelope.id,
            message_type=envelope.type,
            recipient=envelope.recipient,
            raw=sealed.raw,
            sha256=sealed.sha256,
            deadline=now + ctx.settings.receipt_deadline(envelope.type),
        )
        await ctx.audit.append([sent_draft(now, envelope.id, envelope.type, envelope.recipient, sealed.raw)])
        self._queued_at[envelope.id] = None  # until the broker confirmed it
        await ctx.publish_to_peer(
            sealed.raw,
            to=envelope.recipient,
            message_id=envelope.id,
            message_type=envelope.type,
            sealed_key=sealed_key,
        )
        self._queued_at[envelope.id] = ctx.published_to_peer[ctx.country_of(envelope.recipient)]
        await ctx.outbox.mark_confirmed(envelope.id)
        ctx.metrics.sent.labels(envelope.type).inc()
        ctx.metrics.confirmed.labels(envelope.type).inc()
        ctx.log.info("message.sent", message_id=str(envelope.id), type=envelope.type, sender=envelope.sender)

    async def resend_overdue(self) -> int:
        return await self._resending.resend_overdue()

    # -- receipts coming back ------------------------------------------------------------------
    async def on_receipt(self, opened: OpenedMessage) -> None:
        """A receipt from the peer, single or batched: audit it, witness its checkpoint, settle each
        message it answers, and wake whoever waits on one of them."""
        ctx = self._ctx
        payload = opened.payload
        assert isinstance(payload, Receipt | ReceiptBatch)  # open_message parsed it by its declared type
        envelope = opened.envelope
        if isinstance(payload, ReceiptBatch):
            # The same batch again (the peer answered a re-sent duplicate with it): logged as it came,
            # without a second set of references.
            again = await ctx.audit.find(envelope.id, kinds=[EntryKind.RECEIPT_RECEIVED])
            drafts = batch_drafts(
                kind=EntryKind.RECEIPT_RECEIVED,
                time=ctx.clock(),
                peer=envelope.sender,
                raw=opened.raw,
                sha256=opened.sha256,
                receipt_id=envelope.id,
                batch=payload,
                lines=() if again else None,
            )
        else:
            drafts = [
                EntryDraft(
                    kind=EntryKind.RECEIPT_RECEIVED,
                    time=ctx.clock(),
                    message_id=payload.message_id,
                    message_type=Receipt.MESSAGE_TYPE,
                    peer=envelope.sender,
                    envelope=opened.raw,
                    verdict=payload.verdict,
                    reason=payload.reason,
                )
            ]
        await ctx.audit.append(drafts)
        await self._witnessing.witness(payload.checkpoint, peer=envelope.sender, receipt_id=envelope.id)
        # Each answer settles its own outbox record; together they share one group commit.
        await asyncio.gather(
            *(self._settle(receipt, sender=envelope.sender) for receipt in receipts_in(payload)),
            *(
                self._settle_unreadable(line, payload, sender=envelope.sender)
                for line in (payload.unreadable if isinstance(payload, ReceiptBatch) else ())
            ),
        )

    async def _settle_unreadable(self, line: UnreadableLine, batch: AnyReceipt, *, sender: str) -> None:
        """The peer could not read the id of bytes it names by their SHA-256: when they are a message
        of ours, this is its answer. Matching the hash proves our exact bytes arrived, so the refusal
        is about them (too large, or not what the peer parses) and settles the message as any other."""
        record = await self._ctx.outbox.find_by_sha256(line.sha256)
        if record is None:  # nothing we sent: someone else put bytes into our outbound queue
            self._ctx.log.warning(
                "receipt.unknown_body",
                sha256=line.sha256,
                reason=line.reason,
                diagnostic=line.diagnostic,
                audit_index=line.audit_index,
                sender=sender,
            )
            return
        answer = Receipt.model_construct(
            message_id=record.message_id,
            sha256=line.sha256,
            verdict=Verdict.REJECTED,
            reason=line.reason,
            diagnostic=line.diagnostic,
            received_at=batch.received_at,
            audit_index=line.audit_index,
            checkpoint=batch.checkpoint,
        )
        await self._settle(answer, sender=sender)

    async def _settle(self, receipt: Receipt, *, sender: str) -> None:
        ctx = self._ctx
        bound = ctx.log.bind(message_id=str(receipt.message_id), type=Receipt.MESSAGE_TYPE, sender=sender)
        accepted = receipt.verdict == Verdict.ACCEPTED
        retryable = not accepted and receipt.reason in RETRYABLE_REJECTIONS
        sent_at = None
        peer = ctx.country_of(sender)  # the receipt's gateway speaks for its own country's messages
        if not retryable:
            sent_at = await ctx.outbox.settle(
                receipt.message_id,
                sha256=receipt.sha256,
                accepted=accepted,
                reason=receipt.reason,
                at=receipt.received_at,
                recipient_country=peer,
            )
        if sent_at is not None:
            self._queued_at.pop(receipt.message_id, None)
            ctx.metrics.receipt_latency.observe(max(0.0, (ctx.clock() - sent_at).total_seconds()))
        else:  # nothing settled: say why (rare, so the record is read only now)
            record = await ctx.outbox.get(receipt.message_id)
            if record is None:
                bound.warning("receipt.unknown_message")
                return
            if ctx.country_of(record.recipient) != peer:
                # Another peer's message: this gateway cannot answer for it, whatever it says.
                bound.warning("receipt.wrong_peer", recipient=record.recipient, verdict=receipt.verdict)
                return
            if record.sha256 != receipt.sha256:
                # Someone else's bytes under our id (e.g. a forged copy rejected as a conflict): our
                # own message's state is not changed by it.
                bound.warning(
                    "receipt.other_bytes",
                    receipt_sha256=receipt.sha256,
                    verdict=receipt.verdict,
                    reason=receipt.reason,
                )
                return
            if retryable:
                await self._keep_outstanding(record, receipt)
        bound.info(
            "receipt.received",
            verdict=receipt.verdict,
            reason=receipt.reason,
            audit_index=receipt.audit_index,
        )
        waiter = self._waiters.get(receipt.message_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(receipt)
        for observer in self._observers:
            await observer(receipt, not retryable)

    async def _keep_outstanding(self, record: OutboxRecord, receipt: Receipt) -> None:
        """A rejection that says nothing about our bytes: keep the message, re-send it at its deadline.

        E.g. `payload.undecryptable`: the data key travels in an unsigned header that anyone on the
        path can spoil, so the peer's refusal does not end a message whose signed bytes are intact.
        """
        ctx = self._ctx
        if record.state not in (SendState.SENT, SendState.CONFIRMED):
            return
        await ctx.outbox.note_rejection(record.message_id, reason=str(receipt.reason))
        ctx.metrics.retryable_rejections.labels(str(receipt.reason)).inc()
        ctx.log.warning(
            "receipt.rejected_will_resend",
            message_id=str(record.message_id),
            type=record.message_type,
            peer=record.recipient,
            reason=receipt.reason,
            diagnostic=receipt.diagnostic,
            resend_at=record.deadline.isoformat(),
        )

    def _default_sender(self, message_type: str, to: str) -> str:
        """The one authority of ours the agreement with `to`'s country lets send the type."""
        ctx = self._ctx
        try:
            peer = ctx.agreements.authority(to).country if to in ctx.agreements.ids else None
            if peer is None or peer == ctx.country:  # `check_send` says what is wrong with `to`
                return ctx.agreements.only_sender(message_type, ctx.country)
            agreement = ctx.agreements.for_peer(peer)
            agreement.rule(message_type)  # a type it does not cover is told as such, with its name
            return agreement.only_sender(message_type, ctx.country)
        except PolicyError as refused:  # a sender we cannot pick: ours to refuse, not a peer's fault
            raise LocalError(refused.reason, refused.diagnostic) from None
