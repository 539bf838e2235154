"""Answering the peer: signed receipts for what arrived, under the checkpoint that covers it.

A message is answered once: a redelivered or re-sent copy gets the byte-identical receipt logged the
first time. Receipts and witness messages are never answered (`UNANSWERED_TYPES`), so two gateways
cannot bounce rejections at each other forever.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from broker.audit import AuditEntry, EntryDraft, EntryKind
from broker.audit.checkpoint import SignedCheckpoint
from broker.core.catalogue.receipt import Checkpoint, Receipt, Verdict
from broker.core.sealing import OpenedMessage, SealedMessage, VerifiedEnvelope, seal
from broker.exchange.gateway.context import GatewayContext


class Receipts:
    def __init__(self, ctx: GatewayContext) -> None:
        self._ctx = ctx
        self._receipt_checkpoint: tuple[SignedCheckpoint, Checkpoint] | None = None

    async def answer_once(
        self,
        opened: OpenedMessage | VerifiedEnvelope,
        trail: Sequence[AuditEntry],
        *,
        audit_index: int,
        checkpoint: Checkpoint | None = None,
        along: Sequence[EntryDraft] = (),
    ) -> None:
        """Publish the accepting receipt: the one already logged for this message, else a new one.

        A redelivered message thus gets the byte-identical receipt it got the first time. A negative
        receipt sent for an earlier copy (one whose unsigned key header was spoiled) is not reused: this
        copy was accepted. `along` (the DELIVERED entry) is made durable in the same commit as the
        receipt's entry.
        """
        envelope = opened.envelope
        sent = [e for e in trail if e.kind == EntryKind.RECEIPT_SENT and e.verdict == Verdict.ACCEPTED]
        drafts = list(along)
        if sent:
            receipt_raw = sent[0].envelope
        else:
            receipt = self._seal(
                message_id=envelope.id,
                sha256=opened.sha256,
                verdict=Verdict.ACCEPTED,
                audit_index=audit_index,
                checkpoint=checkpoint,
            )
            drafts.append(self._draft(receipt, about=envelope.id, verdict=Verdict.ACCEPTED))
            receipt_raw = receipt.raw
        if drafts:
            await self._ctx.audit.append(drafts)
        await self._ctx.publish_to_peer(
            receipt_raw, message_id=envelope.id, message_type=Receipt.MESSAGE_TYPE
        )

    async def answer_rejection(
        self, *, message_id: UUID, sha256: str, audit_index: int, reason: str, diagnostic: str
    ) -> None:
        """The signed negative receipt for a message we rejected (entry `audit_index`)."""
        receipt = self._seal(
            message_id=message_id,
            sha256=sha256,
            verdict=Verdict.REJECTED,
            audit_index=audit_index,
            reason=reason,
            diagnostic=diagnostic,
            checkpoint=await self.checkpoint_covering(audit_index),
        )
        await self._ctx.audit.append(
            [self._draft(receipt, about=message_id, verdict=Verdict.REJECTED, reason=reason)]
        )
        await self._ctx.publish_to_peer(receipt.raw, message_id=message_id, message_type=Receipt.MESSAGE_TYPE)

    async def checkpoint_covering(self, index: int) -> Checkpoint | None:
        """Our signed checkpoint that includes entry `index`, for the receipt naming it."""
        if self._ctx.checkpointer is None:
            return None
        signed = await self._ctx.checkpointer.covering(index)
        # Receipts of one window share a checkpoint: spell it for receipts once, not per receipt.
        if self._receipt_checkpoint is None or self._receipt_checkpoint[0] is not signed:
            self._receipt_checkpoint = (signed, signed.for_receipt())
        return self._receipt_checkpoint[1]

    def _seal(
        self,
        *,
        message_id: UUID,
        sha256: str,
        verdict: Verdict,
        audit_index: int,
        reason: str | None = None,
        diagnostic: str | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> SealedMessage:
        ctx = self._ctx
        now = ctx.clock()
        receipt = Receipt(
            message_id=message_id,
            sha256=sha256,
            verdict=verdict,
            reason=reason,
            diagnostic=diagnostic,
            received_at=now,
            audit_index=audit_index,
            checkpoint=checkpoint,
        )
        return seal(
            receipt,
            sender=ctx.gateway_id,
            recipient=ctx.peer_gateway_id,
            signer=ctx.gateway_signer,
            created_at=now,
            correlation_id=message_id,
        )

    def _draft(
        self, receipt: SealedMessage, *, about: UUID, verdict: Verdict, reason: str | None = None
    ) -> EntryDraft:
        return EntryDraft(
            kind=EntryKind.RECEIPT_SENT,
            time=self._ctx.clock(),
            message_id=about,
            message_type=Receipt.MESSAGE_TYPE,
            peer=self._ctx.peer_gateway_id,
            envelope=receipt.raw,
            verdict=verdict,
            reason=reason,
        )
