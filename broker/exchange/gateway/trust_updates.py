"""Trust updates from the peer's CA: apply them, keep them on disk, log them, receipt them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from broker.audit import AuditEntry, EntryKind
from broker.core.catalogue.receipt import Verdict
from broker.core.catalogue.trust import TrustUpdate
from broker.core.envelope import sha256_hex
from broker.core.errors import ConfigError, LocalError, Reason, ReplayError
from broker.core.sealing import OpenedMessage
from broker.core.trust import TrustStore
from broker.core.trust_update import EncryptionDirectory, TrustChange, apply_trust_update
from broker.exchange.gateway.context import GatewayContext
from broker.exchange.gateway.receipts import Receipts

RememberTrust = Callable[[str, TrustChange], object]


class TrustUpdates:
    def __init__(
        self,
        ctx: GatewayContext,
        *,
        receipts: Receipts,
        replace_trust: Callable[[TrustStore], None],
        remember: RememberTrust | None,
    ) -> None:
        self._ctx = ctx
        self._receipts = receipts
        self._replace_trust = replace_trust
        # Writes what a trust update changed to the key store, so a restart keeps it.
        self._remember_trust = remember

    async def accept(self, opened: OpenedMessage) -> None:
        """Apply a peer CA's update to our trust store, log it as TRUST_UPDATE, and receipt it."""
        ctx = self._ctx
        update = opened.payload
        assert isinstance(update, TrustUpdate)  # dispatched on the payload type
        envelope = opened.envelope
        trail = await ctx.audit.find(envelope.id, kinds=[EntryKind.TRUST_UPDATE, EntryKind.RECEIPT_SENT])
        applied = [e for e in trail if e.kind == EntryKind.TRUST_UPDATE]
        if applied and sha256_hex(applied[0].envelope) != opened.sha256:
            raise ReplayError(
                Reason.REPLAY_CONFLICT, f"trust update {envelope.id} was already applied with other bytes"
            )
        if applied:
            entry = applied[0]
            await self._receipts.answer_once(opened, trail, audit_index=entry.index)
            return
        async with ctx.key_lock:
            entry = await self._apply(opened, update)
        await self._receipts.answer_once(opened, trail, audit_index=entry.index)

    async def _apply(self, opened: OpenedMessage, update: TrustUpdate) -> AuditEntry:
        """Check, keep on disk, log and swap in: the caller holds the key lock."""
        ctx = self._ctx
        envelope = opened.envelope
        directory = ctx.personal.directory if ctx.personal is not None else EncryptionDirectory()
        change = apply_trust_update(
            update,
            signer_country=opened.signer.country,
            trust=ctx.trust,
            directory=directory,
            at=ctx.clock(),
        )
        # Kept on disk before it is logged as applied: a restart must not forget a revocation.
        # Writing is idempotent, so a crash between the two only repeats it on redelivery.
        await self._remember(update.country, change)
        [entry] = await ctx.audit.append(
            [ctx.draft(EntryKind.TRUST_UPDATE, opened, verdict=Verdict.ACCEPTED)]
        )
        self._replace_trust(change.trust)
        if ctx.personal is not None:
            ctx.personal.directory = change.directory
        ctx.log.info(
            "trust.updated",
            message_id=str(envelope.id),
            type=envelope.type,
            sender=envelope.sender,
            country=update.country,
            new_anchors=change.new_anchors,
            crl_number=change.crl_number,
            authority_certificates=change.authority_certificates,
            audit_index=entry.index,
        )
        return entry

    async def _remember(self, country: str, change: TrustChange) -> None:
        if self._remember_trust is None:
            return
        try:
            await asyncio.to_thread(self._remember_trust, country, change)
        except (OSError, ConfigError) as exc:
            # Our fault, not the peer's: hold the message (it is retried) rather than apply it unsaved.
            diagnostic = exc.diagnostic if isinstance(exc, ConfigError) else str(exc)
            raise LocalError(Reason.CONFIG_INVALID, f"cannot keep the trust update: {diagnostic}") from exc
