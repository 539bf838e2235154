"""Answering the peer: one signed receipt per checkpoint window, under the checkpoint that covers it.

Every message handled while the checkpointer waits out its window (`checkpoint_min_interval_s`) is
answered by the same `receipt.batch`: one signature, one audit entry holding its bytes (plus one
reference entry per message, `broker.audit.receipt_refs`), one publish and one broker hop for the
whole window. At low load the window is empty when a message comes, so it is answered at once, alone.

A message is answered once: a redelivered or re-sent copy gets the byte-identical receipt logged the
first time (its reference names it). Receipts and witness messages are never answered
(`UNANSWERED_TYPES`), so two gateways cannot bounce rejections at each other forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID

from broker.audit import AuditEntry, EntryDraft, EntryKind
from broker.audit.checkpoint import SignedCheckpoint
from broker.audit.receipt_refs import batch_drafts, is_ref, parse_ref
from broker.core.catalogue.receipt import Checkpoint, ReceiptBatch, ReceiptLine, UnreadableLine, Verdict
from broker.core.envelope import sha256_hex
from broker.core.errors import AuditError, Reason
from broker.core.sealing import OpenedMessage, VerifiedEnvelope, peek, seal
from broker.exchange.gateway.context import GatewayContext

# Lines per receipt: bounds its size (a line is ~200 bytes, a rejection's diagnostic up to 1000 more).
MAX_LINES_PER_RECEIPT = 512


@dataclass
class _Pending:
    line: ReceiptLine | UnreadableLine
    peer: str  # the country whose gateway the receipt goes to
    along: Sequence[EntryDraft]  # made durable in the receipt's commit (a DELIVERED entry)
    done: asyncio.Future[None] = field(repr=False)


class Receipts:
    def __init__(self, ctx: GatewayContext) -> None:
        self._ctx = ctx
        self._receipt_checkpoint: tuple[SignedCheckpoint, Checkpoint] | None = None
        self._pending: list[_Pending] = []
        self._issuer: asyncio.Task[None] | None = None
        self.receipts_issued = 0  # signed receipts, for the benchmark's count of signatures

    async def answer_once(
        self,
        opened: OpenedMessage | VerifiedEnvelope,
        trail: Sequence[AuditEntry],
        *,
        audit_index: int,
        along: Sequence[EntryDraft] = (),
    ) -> None:
        """Publish the accepting receipt: the one already logged for this message, else a new one.

        A redelivered message thus gets the byte-identical receipt it got the first time. A negative
        receipt sent for an earlier copy (one whose unsigned key header was spoiled) is not reused:
        this copy was accepted. `along` (the DELIVERED entry) is made durable in the same commit as
        the receipt's entries.
        """
        sent = [e for e in trail if e.kind == EntryKind.RECEIPT_SENT and e.verdict == Verdict.ACCEPTED]
        if not sent:
            line = ReceiptLine(
                message_id=opened.envelope.id,
                sha256=opened.sha256,
                verdict=Verdict.ACCEPTED,
                audit_index=audit_index,
            )
            await self._answer(line, peer=self._ctx.country_of(opened.envelope.sender), along=along)
            return
        receipt_raw = await self._stored_receipt(sent[0])
        if along:
            await self._ctx.audit.append(list(along))
        # Sent again under the type it was signed as (a single receipt in an older log, or a batch).
        seen = peek(receipt_raw)
        await self._ctx.publish_to_peer(
            receipt_raw,
            to=seen.recipient
            or self._ctx.agreements.gateway(self._ctx.country_of(opened.envelope.sender)).id,
            message_id=opened.envelope.id,
            message_type=seen.message_type or ReceiptBatch.MESSAGE_TYPE,
        )

    async def answer_rejection(
        self,
        *,
        message_id: UUID | None,
        sha256: str,
        audit_index: int,
        reason: str,
        diagnostic: str,
        peers: Sequence[str],
    ) -> None:
        """The signed negative line for bytes we rejected (entry `audit_index`): by their message id,
        or, when no id could be read, by their SHA-256 alone (`UnreadableLine`).

        Unreadable bytes came over the link from the peer, the only party that can put bytes into
        our inbound queue, so that answer goes to the peer gateway like every receipt, in a batch of
        its own (`_issue`). Receipts are never answered, so it cannot bounce back and forth.
        `peers`: the countries the answer goes to (`GatewayContext.answer_countries`).
        """
        if message_id is None:
            unreadable = UnreadableLine(
                sha256=sha256, reason=reason, diagnostic=diagnostic, audit_index=audit_index
            )
            await asyncio.gather(*(self._answer(unreadable, peer=peer) for peer in peers))
            return
        line = ReceiptLine(
            message_id=message_id,
            sha256=sha256,
            verdict=Verdict.REJECTED,
            reason=reason,
            diagnostic=diagnostic,
            audit_index=audit_index,
        )
        await asyncio.gather(*(self._answer(line, peer=peer) for peer in peers))

    async def checkpoint_covering(self, index: int) -> Checkpoint | None:
        """Our signed checkpoint that includes entry `index`, for the receipt naming it."""
        if self._ctx.checkpointer is None:
            return None
        signed = await self._ctx.checkpointer.covering(index)
        # Spelled for receipts once per checkpoint, not once per receipt.
        if self._receipt_checkpoint is None or self._receipt_checkpoint[0] is not signed:
            self._receipt_checkpoint = (signed, signed.for_receipt())
        return self._receipt_checkpoint[1]

    # -- the window ----------------------------------------------------------------------------
    async def _answer(
        self, line: ReceiptLine | UnreadableLine, *, peer: str, along: Sequence[EntryDraft] = ()
    ) -> None:
        """Queue a line for the next receipt to `peer`; return once that receipt is logged and published."""
        pending = _Pending(line=line, peer=peer, along=along, done=asyncio.get_running_loop().create_future())
        self._pending.append(pending)
        if self._issuer is None or self._issuer.done():
            self._issuer = asyncio.create_task(self._issue_while_pending(), name="receipt-windows")
        await asyncio.shield(pending.done)

    async def _issue_while_pending(self) -> None:
        while self._pending:
            covered: list[_Pending] = []
            try:
                # Waits out the checkpoint window under load; lines queued meanwhile are covered too.
                checkpoint = await self.checkpoint_covering(max(p.line.audit_index for p in self._pending))
                size = None if checkpoint is None else checkpoint.tree_size
                covered = [p for p in self._pending if size is None or p.line.audit_index < size]
                covered = covered[:MAX_LINES_PER_RECEIPT]
                taken = {id(p) for p in covered}
                self._pending = [p for p in self._pending if id(p) not in taken]
                await self._issue(covered, checkpoint)
            except Exception as error:  # every line waiting on this receipt learns why it failed
                failed = covered or self._pending
                if failed is self._pending:
                    self._pending = []
                for pending in failed:
                    if not pending.done.done():
                        pending.done.set_exception(error)
                continue
            for pending in covered:
                if not pending.done.done():
                    pending.done.set_result(None)

    async def _issue(self, covered: Sequence[_Pending], checkpoint: Checkpoint | None) -> None:
        """One receipt per peer the window's lines answer (each peer sees only its own lines)."""
        for peer in dict.fromkeys(p.peer for p in covered):
            await self._issue_to(peer, [p for p in covered if p.peer == peer], checkpoint)

    async def _issue_to(self, peer: str, covered: Sequence[_Pending], checkpoint: Checkpoint | None) -> None:
        """Sign, log and publish the window's receipt to `peer`. Answers to unreadable bodies go in a receipt
        of their own: a peer that does not know them yet refuses that one and loses no other answer.
        The same bytes refused twice in one window are answered once (a receipt lists each once)."""
        lines: dict[tuple[UUID, str], ReceiptLine] = {}
        unreadable: dict[str, UnreadableLine] = {}
        for pending in covered:
            line = pending.line
            if isinstance(line, ReceiptLine):
                lines.setdefault((line.message_id, line.sha256), line)
            else:
                unreadable.setdefault(line.sha256, line)
        along = [draft for p in covered for draft in p.along]
        if lines:
            await self._issue_one(peer, tuple(lines.values()), (), checkpoint, along=along)
            along = []
        if unreadable:
            await self._issue_one(peer, (), tuple(unreadable.values()), checkpoint, along=along)

    async def _issue_one(
        self,
        peer: str,
        lines: tuple[ReceiptLine, ...],
        unreadable: tuple[UnreadableLine, ...],
        checkpoint: Checkpoint | None,
        *,
        along: Sequence[EntryDraft],
    ) -> None:
        ctx = self._ctx
        now = ctx.clock()
        peer_gateway = ctx.agreements.gateway(peer).id
        batch = ReceiptBatch(received_at=now, checkpoint=checkpoint, lines=lines, unreadable=unreadable)
        sealed = seal(
            batch,
            sender=ctx.gateway_id,
            recipient=peer_gateway,
            signer=ctx.gateway_signer,
            created_at=now,
        )
        drafts = [*along]
        drafts += batch_drafts(
            kind=EntryKind.RECEIPT_SENT,
            time=now,
            peer=peer_gateway,
            raw=sealed.raw,
            sha256=sealed.sha256,
            receipt_id=sealed.envelope.id,
            batch=batch,
        )
        await ctx.audit.append(drafts)
        self.receipts_issued += 1
        await ctx.publish_to_peer(
            sealed.raw, to=peer_gateway, message_id=sealed.envelope.id, message_type=batch.MESSAGE_TYPE
        )

    async def _stored_receipt(self, entry: AuditEntry) -> bytes:
        """The signed bytes that answered a message: a single receipt's own, or its batch's."""
        if not is_ref(entry.envelope):
            return entry.envelope
        ref = parse_ref(entry.envelope)
        for held in await self._ctx.audit.find(ref.receipt_id, kinds=[EntryKind.RECEIPT_SENT]):
            if sha256_hex(held.envelope) == ref.sha256:
                return held.envelope
        raise AuditError(
            Reason.AUDIT_TAMPERED, f"receipt {ref.receipt_id} named by entry {entry.index} is not in the log"
        )
