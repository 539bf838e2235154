"""The receiving side of a gateway: verify what arrives, accept and deliver it, or reject it.

Receive path for every inbound message, in order (STYLE.md 9: ack only when the work is durable):
verify (signature, chain, sender, policy) → freshness → duplicate check → open (decrypt a sealed
payload, schema, rules) → audit RECEIVED (durable) → deliver to local subscribers → audit DELIVERED →
signed receipt (audited, published) → ack. A crash anywhere before the ack means the broker
redelivers; the audit markers make every step idempotent, so a redelivery is neither delivered twice
nor receipted differently.

Rejected messages are audited, copied to the quarantine queue with their reason and original bytes,
and answered with a signed negative receipt: by their id, or by the SHA-256 of their bytes when the
id cannot be read (not JSON, duplicate keys, too deep, not UTF-8, too large). Errors of our own (audit store
or broker unavailable, our own key-agreement key missing) are not rejections: the message is held
unacked and retried, with `inbound.held` and `exchange_inbound_held_total`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import timedelta
from uuid import UUID

from broker.audit import AuditEntry, EntryDraft, EntryKind
from broker.audit.bounded import PREFIX_BYTES as REJECTED_PREFIX_BYTES
from broker.audit.bounded import stored_form
from broker.audit.stored_envelopes import verify_envelope as verify_signed_envelope
from broker.audit.witnessing import UNANSWERED_TYPES
from broker.core.catalogue import citizenship_of
from broker.core.catalogue.receipt import RECEIPT_TYPES, Verdict
from broker.core.catalogue.trust import TrustUpdate
from broker.core.catalogue.witness import CheckpointWitness
from broker.core.envelope import sha256_hex
from broker.core.errors import LocalError, Reason, RemoteError, ReplayError
from broker.core.personal import SEALED_KEY_HEADER, OwnKeyMissing, WrappedKey, is_sealed
from broker.core.sealing import (
    OpenedMessage,
    VerifiedEnvelope,
    check_freshness,
    open_verified,
    peek,
    verify_envelope,
)
from broker.exchange.gateway.context import GatewayContext
from broker.exchange.gateway.message_locks import PerMessageLocks
from broker.exchange.gateway.receipts import Receipts
from broker.exchange.gateway.sending import Sender
from broker.exchange.gateway.trust_updates import TrustUpdates
from broker.exchange.gateway.witnessing import Witnessing
from broker.exchange.personal_keys import sealed_key_headers
from broker.exchange.topology import DELIVERY, DELIVERY_LIMIT, QUARANTINE, delivery_routing_key
from broker.exchange.transport_api import Disposition, HeaderValue, IncomingMessage

# Pauses between retries of a message our own side failed on (audit store or broker unavailable).
OWN_FAILURE_PAUSES_S = (0.2, 0.5, 1.0, 2.0, 5.0)

# Refusals raised before the signer was trusted (`open_message` order): such a body proves nothing.
UNVERIFIED_REASONS = frozenset(
    {
        Reason.MESSAGE_MALFORMED,
        Reason.MESSAGE_OVERSIZED,
        Reason.SIGNATURE_MISSING,
        Reason.SIGNATURE_INVALID,
        Reason.SIGNATURE_ALGORITHM,
        Reason.SIGNATURE_TYPE,
        Reason.CERT_MALFORMED,
        Reason.CERT_UNTRUSTED,
        Reason.CERT_EXPIRED,
        Reason.CERT_NOT_YET_VALID,
        Reason.CERT_REVOKED,
        Reason.CRL_STALE,
        Reason.CERT_USAGE,
        Reason.CERT_AUTHORITY_MISMATCH,
    }
)


class Receiver:
    def __init__(
        self,
        ctx: GatewayContext,
        *,
        sender: Sender,
        receipts: Receipts,
        witnessing: Witnessing,
        trust_updates: TrustUpdates,
    ) -> None:
        self._ctx = ctx
        self._sender = sender
        self._receipts = receipts
        self._witnessing = witnessing
        self._trust_updates = trust_updates
        self._locks = PerMessageLocks()
        # REJECTED entries of messages whose quarantine copy or receipt is not out yet (`reject`).
        self._rejections: dict[tuple[int, str, str], AuditEntry] = {}

    async def on_inbound(self, incoming: IncomingMessage) -> Disposition:
        """Handle one inbound message: fail closed on our own faults, quarantine poison.

        Our own failure (a LocalError: audit store or broker unavailable) is retried here while the
        message stays unacked, so it stays queued, is not audited as rejected, and does not use up
        the broker's delivery limit in a tight requeue loop. Any other exception is a bug this
        message triggers (poison): it is requeued, and on its DELIVERY_LIMIT-th delivery rejected as
        handler.crashed (audited, quarantined, answered) rather than dead-lettered unaudited.
        """
        attempt = 0
        while True:
            try:
                return await self._handle(incoming)
            except LocalError as error:
                if self._ctx.stopping:
                    raise
                pause = OWN_FAILURE_PAUSES_S[min(attempt, len(OWN_FAILURE_PAUSES_S) - 1)]
                attempt += 1
                self._ctx.metrics.inbound_held.labels(str(error.reason)).inc()
                held = {
                    "message_id": incoming.message_id,
                    "reason": str(error.reason),
                    "diagnostic": error.diagnostic,
                    "attempt": attempt,
                    "retry_in_s": pause,
                }
                if isinstance(error, OwnKeyMissing):
                    # Loud: nothing from this recipient gets through until its key is back in the store.
                    self._ctx.log.error(  # noqa: TRY400 - a held message, not a crash: no traceback
                        "inbound.held", holder=error.holder, missing_kids=list(error.kids), **held
                    )
                else:
                    self._ctx.log.warning("inbound.held", **held)
                await asyncio.sleep(pause)
            except Exception as exc:
                if incoming.delivery_count + 1 < DELIVERY_LIMIT:
                    raise
                crash = RemoteError(
                    Reason.HANDLER_CRASHED,
                    f"the gateway failed on this message {DELIVERY_LIMIT} times, last with {exc!r}"[:1000],
                )
                await self.reject(incoming.body, crash)
                return Disposition.ACK

    async def _handle(self, incoming: IncomingMessage) -> Disposition:
        ctx = self._ctx
        raw = incoming.body
        try:
            verified = verify_envelope(
                raw,
                trust=ctx.trust,
                agreement=ctx.agreements,  # the agreement between the sender's country and ours
                local_country=ctx.country,
                max_bytes=ctx.settings.max_message_bytes,
                received_at=ctx.clock(),
            )
            self._check_fresh(verified)
            receipt = open_verified(verified) if verified.envelope.type in RECEIPT_TYPES else None
        except RemoteError as error:
            await self.reject(raw, error)
            return Disposition.ACK
        self._warn_if_crl_stale(verified)
        if receipt is not None:
            async with self._locks.hold(verified.envelope.id):  # copies of one receipt, one at a time
                await self._sender.on_receipt(receipt)
            return Disposition.ACK
        try:
            async with self._locks.hold(verified.envelope.id):
                await self._open_and_take(verified, incoming.headers)
        except RemoteError as error:  # a bad payload, a replay conflict, a trust update we cannot apply
            await self.reject(raw, error)
        return Disposition.ACK

    async def _open_and_take(self, verified: VerifiedEnvelope, headers: Mapping[str, HeaderValue]) -> None:
        """Open a verified, fresh message (under its lock) and take it in by its kind.

        A sealed payload is looked at for duplicates before any key is: a copy of a message taken in
        before needs nothing from its unsigned key header, so a replay naming a made-up key is
        answered (or refused) like any duplicate, never held on a key we do not have.
        """
        ctx = self._ctx
        envelope = verified.envelope
        trail: Sequence[AuditEntry] | None = None
        key_header = headers.get(SEALED_KEY_HEADER)
        if ctx.personal is not None and is_sealed(envelope.payload):
            trail = await self._receive_trail(envelope.id)
            received = self._first_received(verified, trail)
            if received is not None and any(e.kind == EntryKind.DELIVERED for e in trail):
                ctx.log.info("message.duplicate", message_id=str(envelope.id), type=envelope.type,
                             sender=envelope.sender, audit_index=received.index)  # fmt: skip
                await self._receipts.answer_once(verified, trail, audit_index=received.index)
                return
            if received is not None:  # taken in, not yet delivered: open it with the header that opened it
                key_header = await ctx.personal.vault.get(envelope.id) or key_header
        received_key = (
            None
            if ctx.personal is None
            else ctx.personal.data_key_source(
                {SEALED_KEY_HEADER: key_header} if key_header is not None else {}
            )
        )
        opened = open_verified(verified, data_key_for=received_key, require_sealed=ctx.personal is not None)
        if opened.data_key is not None and ctx.personal is not None and received_key is not None:
            # The wrapped data key goes to the erasable vault (wrapped for our auditors too); the
            # audit log keeps only ciphertext.
            kept = ctx.personal.vault_header(opened, received_key.wraps, trust=ctx.trust, at=ctx.clock())
            await ctx.personal.vault.put(envelope.id, kept, at=ctx.clock())
        if isinstance(opened.payload, TrustUpdate):
            await self._trust_updates.accept(opened)
        elif isinstance(opened.payload, CheckpointWitness):
            await self._witnessing.on_witness(opened)
        else:
            await self._accept(opened, received_wraps=received_key.wraps if received_key else (), trail=trail)

    async def _receive_trail(self, message_id: UUID) -> Sequence[AuditEntry]:
        return await self._ctx.audit.find(
            message_id, kinds=[EntryKind.RECEIVED, EntryKind.DELIVERED, EntryKind.RECEIPT_SENT]
        )

    @staticmethod
    def _first_received(
        verified: VerifiedEnvelope | OpenedMessage, trail: Sequence[AuditEntry]
    ) -> AuditEntry | None:
        """The RECEIVED entry of this message id; `replay.conflict` when it holds other bytes."""
        received = [e for e in trail if e.kind == EntryKind.RECEIVED]
        if received and sha256_hex(received[0].envelope) != verified.sha256:
            raise ReplayError(
                Reason.REPLAY_CONFLICT,
                f"message id {verified.envelope.id} was already received (audit index {received[0].index}) with different bytes",
            )
        return received[0] if received else None

    def _warn_if_crl_stale(self, opened: VerifiedEnvelope) -> None:
        """Accepted on a CRL past its nextUpdate (the grace period): loud, on every message."""
        stale_since = opened.signer.crl_stale_since
        if stale_since is None:
            return
        ctx = self._ctx
        ctx.metrics.crl_stale.labels(opened.signer.country).inc()
        ctx.log.warning(
            "trust.crl_stale",
            message_id=str(opened.envelope.id),
            type=opened.envelope.type,
            sender=opened.envelope.sender,
            country=opened.signer.country,
            next_update=stale_since.isoformat(),
            refused_from=(stale_since + ctx.trust.crl_grace).isoformat(),
        )

    def _check_fresh(self, opened: VerifiedEnvelope) -> None:
        settings = self._ctx.settings
        check_freshness(
            opened.envelope,
            now=self._ctx.clock(),
            max_age=timedelta(seconds=settings.max_message_age_s),
            max_skew=timedelta(seconds=settings.max_clock_skew_s),
        )

    async def _accept(
        self,
        opened: OpenedMessage,
        *,
        received_wraps: Sequence[WrappedKey] = (),
        trail: Sequence[AuditEntry] | None = None,
    ) -> None:
        ctx = self._ctx
        envelope = opened.envelope
        bound = ctx.log.bind(message_id=str(envelope.id), type=envelope.type, sender=envelope.sender)
        # A sealed message's trail was read before its key was looked at (`_open_and_take`).
        received_entry = self._first_received(opened, trail) if trail is not None else None
        if received_entry is None:
            # The duplicate check and the RECEIVED entry in one transaction (`append_first`).
            trail, appended = await ctx.audit.append_first(
                ctx.draft(EntryKind.RECEIVED, opened, verdict=Verdict.ACCEPTED),
                trail=(EntryKind.RECEIVED, EntryKind.DELIVERED, EntryKind.RECEIPT_SENT),
            )
            received_entry = appended or self._first_received(opened, trail)
            assert received_entry is not None  # append_first appends unless a RECEIVED entry exists
        assert trail is not None  # read before the key was looked at, or by append_first
        if received_entry in trail:
            bound.info("message.duplicate", audit_index=received_entry.index)
        else:
            ctx.metrics.received.labels(envelope.type).inc()
            bound.info("message.accepted", audit_index=received_entry.index)
        delivered: list[EntryDraft] = []
        if not any(e.kind == EntryKind.DELIVERED for e in trail):
            await self._deliver(opened, received_wraps=received_wraps)
            delivered.append(ctx.draft(EntryKind.DELIVERED, opened, verdict=Verdict.ACCEPTED, envelope=b""))
        await self._receipts.answer_once(opened, trail, audit_index=received_entry.index, along=delivered)

    async def _deliver(self, opened: OpenedMessage, *, received_wraps: Sequence[WrappedKey] = ()) -> None:
        ctx = self._ctx
        citizenship = citizenship_of(opened.payload)
        delivery_key = (
            None
            if ctx.personal is None
            else ctx.personal.delivery_header(
                opened,
                # Local holders as the agreement with the sender's country names them.
                agreement=ctx.agreements.for_peer(opened.signer.country),
                country=ctx.country,
                trust=ctx.trust,
                at=ctx.clock(),
                received=received_wraps,
            )
        )
        await ctx.transport.publish(
            exchange=DELIVERY,
            routing_key=delivery_routing_key(opened.envelope.type, citizenship),
            body=opened.raw,
            message_id=str(opened.envelope.id),
            headers={
                "x-type": opened.envelope.type,
                "x-sender": opened.envelope.sender,
                "x-citizenship": citizenship or "-",
                **sealed_key_headers(delivery_key),
            },
            timeout=ctx.settings.confirm_timeout_s,
            mandatory=False,  # a type nobody subscribed to is not an error: the audit log holds it
        )

    async def reject(self, raw: bytes, error: RemoteError) -> None:
        """Audit, quarantine and (where the message names its id) answer a message we refuse."""
        ctx = self._ctx
        seen = peek(raw)
        now = ctx.clock()
        bound = ctx.log.bind(message_id=str(seen.message_id), type=seen.message_type, sender=seen.sender)
        sha256 = sha256_hex(raw)
        whole = self._keeps_whole(raw, error)
        # A retry after our own failure (quarantine full, broker down) reuses the entry it appended.
        # Keyed by the delivery's body object too: `on_inbound` retries with the same one, while
        # the same bytes arriving twice are two arrivals, each logged.
        held = (id(raw), sha256, str(error.reason))
        entry = self._rejections.get(held)
        if entry is None:
            [entry] = await ctx.audit.append(
                [
                    EntryDraft(
                        kind=EntryKind.REJECTED,
                        time=now,
                        message_id=seen.message_id,
                        message_type=seen.message_type,
                        peer=seen.sender,
                        envelope=stored_form(raw, whole=whole),
                        verdict=Verdict.REJECTED,
                        reason=str(error.reason),
                    )
                ]
            )
            self._rejections[held] = entry
        await ctx.transport.publish(
            exchange=QUARANTINE,
            routing_key="",
            body=raw if whole else raw[:REJECTED_PREFIX_BYTES],
            message_id=str(seen.message_id) if seen.message_id else f"sha256:{sha256}",
            headers={
                "x-reason": str(error.reason),
                "x-diagnostic": error.diagnostic[:1000],
                "x-audit-index": entry.index,
                "x-rejected-at": now.isoformat(),
                "x-sha256": sha256,  # of the whole body, also when only its prefix is kept
                "x-body-length": len(raw),
            },
            timeout=ctx.settings.confirm_timeout_s,
        )
        self._rejections.pop(held, None)
        ctx.metrics.rejected.labels(str(error.reason)).inc()
        bound.warning(
            "message.rejected", reason=str(error.reason), diagnostic=error.diagnostic, audit_index=entry.index
        )
        # Receipts and witness messages are never answered, so two gateways cannot bounce
        # rejections at each other forever. Bytes whose id cannot be read: answered by their hash.
        if seen.message_type in UNANSWERED_TYPES:
            return
        await self._receipts.answer_rejection(
            message_id=seen.message_id,
            sha256=sha256,
            audit_index=entry.index,
            reason=str(error.reason),
            diagnostic=error.diagnostic[:1000],
            peers=ctx.answer_countries(seen.sender),
        )

    def _keeps_whole(self, raw: bytes, error: RemoteError) -> bool:
        """Whether a rejected body is kept whole (audit log and quarantine) or only bounded.

        Whole: anything up to REJECTED_PREFIX_BYTES, and a bigger body within the size limit that a
        trusted authority signed (evidence of what it sent). Everything else (oversized, or rejected
        before its signer was trusted) is kept as its hash, length and first REJECTED_PREFIX_BYTES,
        so a peer cannot make the append-only log keep megabytes of junk (`broker.audit.bounded`).
        """
        if len(raw) <= REJECTED_PREFIX_BYTES:
            return True
        if len(raw) > self._ctx.settings.max_message_bytes or error.reason in UNVERIFIED_REASONS:
            return False
        try:  # a refusal after the signature (stale, replayed, against policy): check the signer
            verify_signed_envelope(raw, trust=self._ctx.trust)
        except Exception:  # anything but a clean verification: the body proves nothing
            return False
        return True
