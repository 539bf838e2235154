"""Re-sending what the peer has not receipted by its deadline, without piling up copies.

Re-sending neither piles up copies nor hammers a silent peer (docs/reliability.md, "Re-sends during
a link outage"): a message is not published again while an earlier copy of it is still waiting in
`outbound.<peer>` of its recipient's country (the link is down, so another copy would only be
carried later beside it), and each re-send waits twice as long as the one before
(`ExchangeSettings.resend_interval`). Each peer's queue is judged on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from uuid import UUID

from broker.audit import EntryKind
from broker.core.errors import LocalError
from broker.exchange.gateway.context import GatewayContext, sent_draft
from broker.exchange.topology import outbound_queue
from broker.state.outbox import OutboxRecord


class Resending:
    def __init__(self, ctx: GatewayContext) -> None:
        self._ctx = ctx
        self._task: asyncio.Task[None] | None = None
        # Per outstanding message: `ctx.published_to_peer[its peer]` just after its latest copy was
        # queued, or None when its publish failed (no copy of ours waits). Unknown (sent before this
        # process started): taken as 0, i.e. queued before anything this process published.
        self.queued_at: dict[UUID, int | None] = {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._resend_loop(), name=f"{self._ctx.gateway_id}-resend")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def resend_overdue(self) -> int:
        """Re-publish each message past its deadline whose earlier copy is no longer waiting on this
        side; push the deadline of the others out. Returns how many copies were published."""
        ctx = self._ctx
        now = ctx.clock()
        overdue = await ctx.outbox.overdue(now)
        waiting_by_peer: dict[str, int] = {}  # each peer's queue looked at once per round
        resent = 0
        for record in overdue:
            peer = ctx.country_of(record.recipient)
            if peer not in waiting_by_peer:
                waiting_by_peer[peer] = await self._copies_waiting(peer)
            waiting = waiting_by_peer[peer]
            await self._audit_sent_once(record)
            about = ctx.log.bind(
                message_id=str(record.message_id), type=record.message_type, peer=record.recipient
            )
            if self._still_waiting(record.message_id, waiting, peer):
                # Another copy now would only queue up behind this one; the deadline counts again.
                interval = ctx.settings.resend_interval(record.message_type, record.attempts)
                await ctx.outbox.postpone(record.message_id, deadline=now + interval)
                ctx.metrics.resend_held.labels(record.message_type).inc()
                about.info(
                    "resend.held",
                    attempts=record.attempts,
                    queued=waiting,
                    next_check=(now + interval).isoformat(),
                )
                continue
            sealed_key = await ctx.personal.vault.get(record.message_id) if ctx.personal is not None else None
            self.queued_at[record.message_id] = None
            await ctx.publish_to_peer(
                record.raw,
                to=record.recipient,
                message_id=record.message_id,
                message_type=record.message_type,
                sealed_key=sealed_key,
            )
            self.queued_at[record.message_id] = ctx.published_to_peer[peer]
            interval = ctx.settings.resend_interval(record.message_type, record.attempts + 1)
            await ctx.outbox.mark_resent(record.message_id, deadline=now + interval)
            resent += 1
            ctx.metrics.resent.labels(record.message_type).inc()
            about.warning(
                "receipt.overdue",
                attempts=record.attempts + 1,
                sent_at=record.sent_at.isoformat(),
                next_check=(now + interval).isoformat(),
            )
        ctx.metrics.receipts_outstanding.set(await ctx.outbox.outstanding_count())
        return resent

    async def _copies_waiting(self, peer: str) -> int:
        """Messages ready in `outbound.<peer>`: the link has not carried them yet. (A copy the shovel
        holds unacknowledged, in flight, counts as carried; on a dead link the shovel gives it back.)"""
        ready, _ = await self._ctx.transport.queue_counts(outbound_queue(peer.lower()))
        return ready

    def _still_waiting(self, message_id: UUID, waiting: int, peer: str) -> bool:
        """Whether the latest copy of the message is among the `waiting` messages still queued.

        The queue is first in, first out, and this gateway is its only publisher: a copy is still
        there when fewer than `waiting` messages were queued after it.
        """
        queued_at = self.queued_at.get(message_id, 0)
        if queued_at is None:  # its last publish failed: nothing of ours waits
            return False
        return self._ctx.published_to_peer.get(peer, 0) - queued_at < waiting

    async def _audit_sent_once(self, record: OutboxRecord) -> None:
        """Add the `sent` entry a crash between the outbox row and the audit append left out."""
        ctx = self._ctx
        if await ctx.audit.find(record.message_id, kinds=[EntryKind.SENT]):
            return
        await ctx.audit.append(
            [sent_draft(ctx.clock(), record.message_id, record.message_type, record.recipient, record.raw)]
        )

    async def _resend_loop(self) -> None:
        while True:
            await asyncio.sleep(self._ctx.settings.resend_check_interval_s)
            try:
                await self.resend_overdue()
            except LocalError as error:
                # The broker or store is down; the next round tries again.
                self._ctx.log.warning("resend.failed", reason=str(error.reason), diagnostic=error.diagnostic)
