"""A country's gateway: sends sealed messages to the peer and opens what the peer sends.

Receive path for every inbound message, in order (STYLE.md 9: ack only when the work is durable):
open (verify, validate, policy) → freshness → duplicate check → audit RECEIVED (durable) → deliver to
local subscribers → audit DELIVERED → signed receipt (audited, published) → ack. A crash anywhere
before the ack means the broker redelivers; the audit markers make every step idempotent, so a
redelivery is neither delivered twice nor receipted differently.

Rejected messages are audited, copied to the quarantine queue with their reason and original bytes,
and answered with a signed negative receipt when their id can be read. Errors of our own (audit store
or broker unavailable) are not rejections: the message is requeued and nothing is acked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Self
from uuid import UUID

import structlog

from broker.agreement import Agreement, load_agreement
from broker.audit import AuditEntry, AuditStore, EntryDraft, EntryKind
from broker.audit.bounded import PREFIX_BYTES as REJECTED_PREFIX_BYTES
from broker.audit.bounded import stored_form
from broker.audit.checkpoint import SignedCheckpoint, WitnessRecord
from broker.audit.checkpointer import Checkpointer
from broker.audit.verify import verify_envelope as verify_signed_envelope
from broker.catalogue import Payload, citizenship_of
from broker.catalogue.receipt import Checkpoint, Receipt, Verdict
from broker.catalogue.trust import TrustUpdate
from broker.catalogue.witness import CheckpointWitness
from broker.envelope import sha256_hex
from broker.errors import (
    ConfigError,
    LocalError,
    PolicyError,
    Reason,
    RemoteError,
    ReplayError,
)
from broker.ids import uuid7
from broker.key_vault import KeyVault
from broker.metrics import GatewayMetrics
from broker.outbox import Outbox, OutboxRecord, SendState
from broker.personal import SEALED_KEY_HEADER, Decryptor, WrappedKey
from broker.personal_keys import KeyUnwrapper, PersonalDataKeys, sealed_key_headers
from broker.pki import Signer
from broker.sealing import OpenedMessage, SealedMessage, check_freshness, open_message, peek, seal
from broker.settings import ExchangeSettings
from broker.topology import (
    DELIVERY,
    DELIVERY_LIMIT,
    INBOUND,
    OUTBOUND,
    QUARANTINE,
    delivery_routing_key,
)
from broker.transport_api import ConsumerHandle, Disposition, IncomingMessage, Transport
from broker.trust import TrustStore
from broker.trust_update import EncryptionDirectory, TrustChange, apply_trust_update
from broker.witnessing import UNANSWERED_TYPES, check_against_log, countersigned_record, seal_witness

if TYPE_CHECKING:
    from broker.keystore import KeyStore

log = structlog.get_logger("broker.gateway")

Clock = Callable[[], datetime]

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

# Negative receipts that do not end a message: it stays outstanding and is re-sent at its deadline.
# The peer could not open what reached it, but the fault need not be in the bytes we signed.
# (`crl.stale`: the receiver lacks a current CRL of ours; once it has one, the re-send passes.)
RETRYABLE_REJECTIONS = frozenset({str(Reason.PAYLOAD_UNDECRYPTABLE), str(Reason.CRL_STALE)})


def utc_now() -> datetime:
    return datetime.now(UTC)


class PerMessageLocks:
    """One lock per message id, kept while any copy of that message is being handled.

    Copies of one message (broker redeliveries, a peer's re-send) are handled one at a time, so the
    duplicate check always sees the audit entries the previous copy wrote.
    """

    def __init__(self) -> None:
        self._locks: dict[UUID, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, message_id: UUID) -> AsyncIterator[None]:
        lock, holders = self._locks.get(message_id, (asyncio.Lock(), 0))
        self._locks[message_id] = (lock, holders + 1)
        try:
            async with lock:
                yield
        finally:
            lock, holders = self._locks[message_id]
            if holders == 1:
                del self._locks[message_id]
            else:
                self._locks[message_id] = (lock, holders - 1)

    def __len__(self) -> int:
        return len(self._locks)


@dataclass(frozen=True)
class SendResult:
    message_id: UUID
    sha256: str
    receipt: Receipt | None


class Gateway:
    def __init__(
        self,
        *,
        country: str,
        agreement: Agreement,
        trust: TrustStore,
        gateway_signer: Signer,
        signer_for: Callable[[str], Signer],
        transport: Transport,
        audit: AuditStore,
        outbox: Outbox,
        settings: ExchangeSettings,
        metrics: GatewayMetrics | None = None,
        clock: Clock = utc_now,
        checkpointer: Checkpointer | None = None,
        personal: PersonalDataKeys | None = None,
        remember_trust: Callable[[str, TrustChange], object] | None = None,
    ) -> None:
        self.country = country
        self.peer_country = agreement.peer_country(country)
        self.agreement = agreement
        self.gateway_id = agreement.gateway(country).id
        self.peer_gateway_id = agreement.gateway(self.peer_country).id
        self._trust = trust
        self._gateway_signer = gateway_signer
        self._signer_for = signer_for
        self._transport = transport
        self._audit = audit
        self._outbox = outbox
        self._settings = settings
        self.metrics = metrics or GatewayMetrics()
        self._clock = clock
        self._checkpointer = checkpointer
        # Without it, personal payloads travel in clear (a development setup without key agreement).
        self._personal = personal
        # Writes what a trust update changed to the key store, so a restart keeps it.
        self._remember_trust = remember_trust
        self._waiters: dict[UUID, asyncio.Future[Receipt]] = {}
        self._locks = PerMessageLocks()
        # REJECTED entries of messages whose quarantine copy or receipt is not out yet (`_reject`).
        self._rejections: dict[tuple[int, str, str], AuditEntry] = {}
        self._receipt_checkpoint: tuple[SignedCheckpoint, Checkpoint] | None = None
        self._consumer: ConsumerHandle | None = None
        self._resender: asyncio.Task[None] | None = None
        self._stopping = False
        self._log = log.bind(gateway=self.gateway_id, peer=self.peer_gateway_id)

    @classmethod
    def from_settings(
        cls, settings: ExchangeSettings, *, metrics: GatewayMetrics | None = None
    ) -> GatewayRun:
        """`async with Gateway.from_settings(settings) as gw:` assembles, starts, and finally closes."""
        return GatewayRun(settings=settings, metrics=metrics)

    @property
    def trust(self) -> TrustStore:
        return self._trust

    def replace_trust(self, trust: TrustStore) -> None:
        """Swap in new trust material (a trust update, a re-imported bundle) without a restart."""
        self._trust = trust
        if self._checkpointer is not None:
            self._checkpointer.replace_trust(trust)

    def replace_gateway_signer(self, signer: Signer) -> None:
        """Sign receipts, checkpoints and countersignatures with a rotated gateway key from now on."""
        self._gateway_signer = signer
        if self._checkpointer is not None:
            self._checkpointer.replace_signer(signer)

    @property
    def personal(self) -> PersonalDataKeys | None:
        return self._personal

    @property
    def outbox(self) -> Outbox:
        return self._outbox

    @property
    def audit(self) -> AuditStore:
        return self._audit

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        self._stopping = False
        self._consumer = await self._transport.consume(
            INBOUND, self._on_inbound, prefetch=self._settings.prefetch
        )
        self._resender = asyncio.create_task(self._resend_loop(), name=f"{self.gateway_id}-resend")
        if self._checkpointer is not None:
            await self._checkpointer.start()
        self._log.info("gateway.started")

    async def stop(self) -> None:
        if self._stopping:
            return  # already stopped (close() after `async with`, or a second signal)
        self._stopping = True
        if self._resender is not None:
            self._resender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resender
            self._resender = None
        if self._consumer is not None:
            await self._consumer.cancel()
            self._consumer = None
        for waiter in self._waiters.values():
            waiter.cancel()
        if self._checkpointer is not None:
            await self._checkpointer.stop()  # last: its final checkpoint covers everything logged
        self._log.info("gateway.stopped")

    async def close(self) -> None:
        """Stop, then release the broker connection, the audit store and the outbox."""
        await self.stop()
        await self._transport.close()
        await self._audit.close()
        self._outbox.close()
        if self._personal is not None:
            self._personal.vault.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- sending -------------------------------------------------------------------------------
    async def send(
        self,
        payload: Payload,
        *,
        to: str,
        sender: str | None = None,
        wait_receipt: bool = False,
        receipt_timeout_s: float | None = None,
        correlation_id: UUID | None = None,
    ) -> SendResult:
        """Seal `payload` as `sender`, publish it to the peer and optionally wait for its receipt.

        Without `sender`, the one authority of this country that may send this type signs it.
        """
        sender = sender or self._default_sender(payload.MESSAGE_TYPE)
        try:
            self.agreement.check_send(message_type=payload.MESSAGE_TYPE, sender_id=sender, recipient_id=to)
        except PolicyError as refused:
            raise LocalError(
                refused.reason, f"refusing to send: {refused.diagnostic}", article=refused.article
            ) from None
        if self.agreement.authority(sender).country != self.country:
            raise LocalError(Reason.POLICY_SENDER_NOT_ALLOWED, f"{sender} does not belong to {self.country}")
        message_id = uuid7()
        data_key, sealed_key = None, None
        if self._personal is not None and payload.PERSONAL:
            data_key, sealed_key = self._personal.wrap_for_sending(
                message_id=message_id, sender=sender, recipient=to, trust=self._trust, at=self._clock()
            )
        sealed = seal(
            payload,
            sender=sender,
            recipient=to,
            signer=self._signer_for(sender),
            created_at=self._clock(),
            message_id=message_id,
            correlation_id=correlation_id,
            data_key=data_key,
        )
        waiter: asyncio.Future[Receipt] | None = None
        if wait_receipt:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters[sealed.envelope.id] = waiter
        try:
            await self._record_and_publish(sealed, sealed_key=sealed_key)
            if waiter is None:
                return SendResult(message_id=sealed.envelope.id, sha256=sealed.sha256, receipt=None)
            limit = (
                receipt_timeout_s
                if receipt_timeout_s is not None
                else self._settings.receipt_deadline(payload.MESSAGE_TYPE).total_seconds()
            )
            receipt = await asyncio.wait_for(waiter, limit)
            return SendResult(message_id=sealed.envelope.id, sha256=sealed.sha256, receipt=receipt)
        finally:
            self._waiters.pop(sealed.envelope.id, None)

    async def publish_sealed(self, sealed: SealedMessage) -> None:
        """Send bytes sealed elsewhere (a ministry system that signs with its own keys) and track them.

        The gateway does not re-check them: the peer verifies, and a fault comes back as a negative
        receipt, which is what the ministry needs to see.
        """
        await self._record_and_publish(sealed)

    async def _record_and_publish(self, sealed: SealedMessage, *, sealed_key: str | None = None) -> None:
        envelope = sealed.envelope
        now = self._clock()
        if sealed_key is not None and self._personal is not None:
            await self._personal.vault.put(envelope.id, sealed_key, at=now)
        # The outbox row first: it is the durable intent the resend loop acts on. A crash before the
        # `sent` entry is repaired there (`_audit_sent_once`); the other order left `sent` entries
        # for messages that never left and never would.
        await self._outbox.record_sent(
            message_id=envelope.id,
            message_type=envelope.type,
            recipient=envelope.recipient,
            raw=sealed.raw,
            sha256=sealed.sha256,
            deadline=now + self._settings.receipt_deadline(envelope.type),
        )
        await self._audit.append(
            [_sent_draft(now, envelope.id, envelope.type, envelope.recipient, sealed.raw)]
        )
        await self._publish_to_peer(
            sealed.raw, message_id=envelope.id, message_type=envelope.type, sealed_key=sealed_key
        )
        await self._outbox.mark_confirmed(envelope.id)
        self.metrics.sent.labels(envelope.type).inc()
        self.metrics.confirmed.labels(envelope.type).inc()
        self._log.info(
            "message.sent", message_id=str(envelope.id), type=envelope.type, sender=envelope.sender
        )

    async def _publish_to_peer(
        self, raw: bytes, *, message_id: UUID, message_type: str, sealed_key: str | None = None
    ) -> None:
        await self._transport.publish(
            exchange=OUTBOUND,
            routing_key=self.peer_country.lower(),
            body=raw,
            message_id=str(message_id),
            headers={"x-type": message_type, **sealed_key_headers(sealed_key)},
            timeout=self._settings.confirm_timeout_s,
        )

    async def resend_overdue(self) -> int:
        """Re-send, with the same id and bytes, every message whose receipt deadline has passed."""
        now = self._clock()
        overdue = await self._outbox.overdue(now)
        for record in overdue:
            await self._audit_sent_once(record)
            sealed_key = (
                await self._personal.vault.get(record.message_id) if self._personal is not None else None
            )
            await self._publish_to_peer(
                record.raw,
                message_id=record.message_id,
                message_type=record.message_type,
                sealed_key=sealed_key,
            )
            await self._outbox.mark_resent(
                record.message_id, deadline=now + self._settings.receipt_deadline(record.message_type)
            )
            self.metrics.resent.labels(record.message_type).inc()
            self._log.warning(
                "receipt.overdue",
                message_id=str(record.message_id),
                type=record.message_type,
                peer=record.recipient,
                attempts=record.attempts + 1,
                sent_at=record.sent_at.isoformat(),
            )
        self.metrics.receipts_outstanding.set(await self._outbox.outstanding_count())
        return len(overdue)

    async def _audit_sent_once(self, record: OutboxRecord) -> None:
        """Add the `sent` entry a crash between the outbox row and the audit append left out."""
        if await self._audit.find(record.message_id, kinds=[EntryKind.SENT]):
            return
        await self._audit.append(
            [_sent_draft(self._clock(), record.message_id, record.message_type, record.recipient, record.raw)]
        )

    async def _resend_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.resend_check_interval_s)
            try:
                await self.resend_overdue()
            except LocalError as error:
                # The broker or store is down; the next round tries again.
                self._log.warning("resend.failed", reason=str(error.reason), diagnostic=error.diagnostic)

    # -- receiving -----------------------------------------------------------------------------
    async def _on_inbound(self, incoming: IncomingMessage) -> Disposition:
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
                return await self._handle_inbound(incoming)
            except LocalError as error:
                if self._stopping:
                    raise
                pause = OWN_FAILURE_PAUSES_S[min(attempt, len(OWN_FAILURE_PAUSES_S) - 1)]
                attempt += 1
                self._log.warning(
                    "inbound.held",
                    message_id=incoming.message_id,
                    reason=str(error.reason),
                    diagnostic=error.diagnostic,
                    attempt=attempt,
                    retry_in_s=pause,
                )
                await asyncio.sleep(pause)
            except Exception as exc:
                if incoming.delivery_count + 1 < DELIVERY_LIMIT:
                    raise
                crash = RemoteError(
                    Reason.HANDLER_CRASHED,
                    f"the gateway failed on this message {DELIVERY_LIMIT} times, last with {exc!r}"[:1000],
                )
                await self._reject(incoming.body, crash)
                return Disposition.ACK

    async def _handle_inbound(self, incoming: IncomingMessage) -> Disposition:
        raw = incoming.body
        received_key = None if self._personal is None else self._personal.data_key_source(incoming.headers)
        try:
            opened = open_message(
                raw,
                trust=self._trust,
                agreement=self.agreement,
                local_country=self.country,
                max_bytes=self._settings.max_message_bytes,
                received_at=self._clock(),
                data_key_for=received_key,
                require_sealed=self._personal is not None,
            )
            self._check_fresh(opened)
        except RemoteError as error:
            await self._reject(raw, error)
            return Disposition.ACK
        self._warn_if_crl_stale(opened)
        if opened.envelope.type == Receipt.MESSAGE_TYPE:
            await self._on_receipt(opened)
            return Disposition.ACK
        if opened.data_key is not None and self._personal is not None:
            # The wrapped data key goes to the erasable vault; the audit log keeps only ciphertext.
            await self._personal.vault.put(
                opened.envelope.id, str(incoming.headers[SEALED_KEY_HEADER]), at=self._clock()
            )
        try:
            async with self._locks.hold(opened.envelope.id):
                if isinstance(opened.payload, TrustUpdate):
                    await self._accept_trust_update(opened)
                elif isinstance(opened.payload, CheckpointWitness):
                    await self._on_witness(opened)
                else:
                    await self._accept(opened, received_wraps=received_key.wraps if received_key else ())
        except RemoteError as error:  # a replay conflict, a trust update we cannot apply, a bad witness
            await self._reject(raw, error)
        return Disposition.ACK

    def _warn_if_crl_stale(self, opened: OpenedMessage) -> None:
        """Accepted on a CRL past its nextUpdate (the grace period): loud, on every message."""
        stale_since = opened.signer.crl_stale_since
        if stale_since is None:
            return
        self.metrics.crl_stale.labels(opened.signer.country).inc()
        self._log.warning(
            "trust.crl_stale",
            message_id=str(opened.envelope.id),
            type=opened.envelope.type,
            sender=opened.envelope.sender,
            country=opened.signer.country,
            next_update=stale_since.isoformat(),
            refused_from=(stale_since + self._trust.crl_grace).isoformat(),
        )

    def _check_fresh(self, opened: OpenedMessage) -> None:
        check_freshness(
            opened.envelope,
            now=self._clock(),
            max_age=timedelta(seconds=self._settings.max_message_age_s),
            max_skew=timedelta(seconds=self._settings.max_clock_skew_s),
        )

    async def _accept(self, opened: OpenedMessage, *, received_wraps: Sequence[WrappedKey] = ()) -> None:
        envelope = opened.envelope
        bound = self._log.bind(message_id=str(envelope.id), type=envelope.type, sender=envelope.sender)
        trail = await self._audit.find(
            envelope.id, kinds=[EntryKind.RECEIVED, EntryKind.DELIVERED, EntryKind.RECEIPT_SENT]
        )
        received = [e for e in trail if e.kind == EntryKind.RECEIVED]
        if received and sha256_hex(received[0].envelope) != opened.sha256:
            raise ReplayError(
                Reason.REPLAY_CONFLICT,
                f"message id {envelope.id} was already received (audit index {received[0].index}) with different bytes",
            )
        if received:
            received_entry = received[0]
            bound.info("message.duplicate", audit_index=received_entry.index)
        else:
            [received_entry] = await self._audit.append(
                [self._draft(EntryKind.RECEIVED, opened, verdict=Verdict.ACCEPTED)]
            )
            self.metrics.received.labels(envelope.type).inc()
            bound.info("message.accepted", audit_index=received_entry.index)
        delivered: list[EntryDraft] = []
        if not any(e.kind == EntryKind.DELIVERED for e in trail):
            await self._deliver(opened, received_wraps=received_wraps)
            delivered.append(self._draft(EntryKind.DELIVERED, opened, verdict=Verdict.ACCEPTED, envelope=b""))
        await self._receipt_once(
            opened,
            trail,
            audit_index=received_entry.index,
            checkpoint=await self._checkpoint_covering(received_entry.index),
            along=delivered,
        )

    async def _receipt_once(
        self,
        opened: OpenedMessage,
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
            receipt = self._seal_receipt(
                message_id=envelope.id,
                sha256=opened.sha256,
                verdict=Verdict.ACCEPTED,
                audit_index=audit_index,
                checkpoint=checkpoint,
            )
            drafts.append(self._receipt_draft(receipt, about=envelope.id, verdict=Verdict.ACCEPTED))
            receipt_raw = receipt.raw
        if drafts:
            await self._audit.append(drafts)
        await self._publish_to_peer(receipt_raw, message_id=envelope.id, message_type=Receipt.MESSAGE_TYPE)

    async def _deliver(self, opened: OpenedMessage, *, received_wraps: Sequence[WrappedKey] = ()) -> None:
        citizenship = citizenship_of(opened.payload)
        await self._transport.publish(
            exchange=DELIVERY,
            routing_key=delivery_routing_key(opened.envelope.type, citizenship),
            body=opened.raw,
            message_id=str(opened.envelope.id),
            headers={
                "x-type": opened.envelope.type,
                "x-sender": opened.envelope.sender,
                "x-citizenship": citizenship or "-",
                **sealed_key_headers(self._delivery_key(opened, received=received_wraps)),
            },
            timeout=self._settings.confirm_timeout_s,
            mandatory=False,  # a type nobody subscribed to is not an error: the audit log holds it
        )

    def _delivery_key(self, opened: OpenedMessage, *, received: Sequence[WrappedKey]) -> str | None:
        if self._personal is None:
            return None
        return self._personal.delivery_header(
            opened,
            agreement=self.agreement,
            country=self.country,
            trust=self._trust,
            at=self._clock(),
            received=received,
        )

    async def _accept_trust_update(self, opened: OpenedMessage) -> None:
        """Apply a peer CA's update to our trust store, log it as TRUST_UPDATE, and receipt it."""
        update = opened.payload
        assert isinstance(update, TrustUpdate)  # dispatched on the payload type
        envelope = opened.envelope
        trail = await self._audit.find(envelope.id, kinds=[EntryKind.TRUST_UPDATE, EntryKind.RECEIPT_SENT])
        applied = [e for e in trail if e.kind == EntryKind.TRUST_UPDATE]
        if applied and sha256_hex(applied[0].envelope) != opened.sha256:
            raise ReplayError(
                Reason.REPLAY_CONFLICT, f"trust update {envelope.id} was already applied with other bytes"
            )
        if applied:
            entry = applied[0]
        else:
            directory = self._personal.directory if self._personal is not None else EncryptionDirectory()
            change = apply_trust_update(
                update,
                signer_country=opened.signer.country,
                trust=self._trust,
                directory=directory,
                at=self._clock(),
            )
            # Kept on disk before it is logged as applied: a restart must not forget a revocation.
            # Writing is idempotent, so a crash between the two only repeats it on redelivery.
            await self._remember(update.country, change)
            [entry] = await self._audit.append(
                [self._draft(EntryKind.TRUST_UPDATE, opened, verdict=Verdict.ACCEPTED)]
            )
            self.replace_trust(change.trust)
            if self._personal is not None:
                self._personal.directory = change.directory
            self._log.info(
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
        await self._receipt_once(opened, trail, audit_index=entry.index)

    async def _remember(self, country: str, change: TrustChange) -> None:
        if self._remember_trust is None:
            return
        try:
            await asyncio.to_thread(self._remember_trust, country, change)
        except (OSError, ConfigError) as exc:
            # Our fault, not the peer's: hold the message (it is retried) rather than apply it unsaved.
            diagnostic = exc.diagnostic if isinstance(exc, ConfigError) else str(exc)
            raise LocalError(Reason.CONFIG_INVALID, f"cannot keep the trust update: {diagnostic}") from exc

    async def _reject(self, raw: bytes, error: RemoteError) -> None:
        seen = peek(raw)
        now = self._clock()
        bound = self._log.bind(message_id=str(seen.message_id), type=seen.message_type, sender=seen.sender)
        sha256 = sha256_hex(raw)
        whole = self._keeps_whole(raw, error)
        # A retry after our own failure (quarantine full, broker down) reuses the entry it appended.
        # Keyed by the delivery's body object too: `_on_inbound` retries with the same one, while
        # the same bytes arriving twice are two arrivals, each logged.
        held = (id(raw), sha256, str(error.reason))
        entry = self._rejections.get(held)
        if entry is None:
            [entry] = await self._audit.append(
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
        await self._transport.publish(
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
            timeout=self._settings.confirm_timeout_s,
        )
        self._rejections.pop(held, None)
        self.metrics.rejected.labels(str(error.reason)).inc()
        bound.warning(
            "message.rejected", reason=str(error.reason), diagnostic=error.diagnostic, audit_index=entry.index
        )
        # A receipt needs the message id; receipts and witness messages are never answered, so two
        # gateways cannot bounce rejections at each other forever.
        if seen.message_id is None or seen.message_type in UNANSWERED_TYPES:
            return
        receipt = self._seal_receipt(
            message_id=seen.message_id,
            sha256=sha256,
            verdict=Verdict.REJECTED,
            audit_index=entry.index,
            reason=str(error.reason),
            diagnostic=error.diagnostic[:1000],
            checkpoint=await self._checkpoint_covering(entry.index),
        )
        await self._audit.append(
            [
                self._receipt_draft(
                    receipt, about=seen.message_id, verdict=Verdict.REJECTED, reason=str(error.reason)
                )
            ]
        )
        await self._publish_to_peer(
            receipt.raw, message_id=seen.message_id, message_type=Receipt.MESSAGE_TYPE
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
        if len(raw) > self._settings.max_message_bytes or error.reason in UNVERIFIED_REASONS:
            return False
        try:  # a refusal after the signature (stale, replayed, against policy): check the signer
            verify_signed_envelope(raw, trust=self._trust)
        except Exception:  # anything but a clean verification: the body proves nothing
            return False
        return True

    async def _on_receipt(self, opened: OpenedMessage) -> None:
        receipt = opened.payload
        assert isinstance(receipt, Receipt)  # open_message parsed it by its declared type
        bound = self._log.bind(
            message_id=str(receipt.message_id), type=Receipt.MESSAGE_TYPE, sender=opened.envelope.sender
        )
        await self._audit.append(
            [
                EntryDraft(
                    kind=EntryKind.RECEIPT_RECEIVED,
                    time=self._clock(),
                    message_id=receipt.message_id,
                    message_type=Receipt.MESSAGE_TYPE,
                    peer=opened.envelope.sender,
                    envelope=opened.raw,
                    verdict=receipt.verdict,
                    reason=receipt.reason,
                )
            ]
        )
        await self._witness(receipt, peer=opened.envelope.sender)
        record = await self._outbox.get(receipt.message_id)
        if record is None:
            bound.warning("receipt.unknown_message")
            return
        if record.sha256 != receipt.sha256:
            # Someone else's bytes under our id (e.g. a forged copy rejected as a conflict): our own
            # message's state is not changed by it.
            bound.warning(
                "receipt.other_bytes",
                receipt_sha256=receipt.sha256,
                verdict=receipt.verdict,
                reason=receipt.reason,
            )
            return
        accepted = receipt.verdict == Verdict.ACCEPTED
        if not accepted and receipt.reason in RETRYABLE_REJECTIONS:
            await self._keep_outstanding(record, receipt)
        elif record.state in (SendState.SENT, SendState.CONFIRMED):
            await self._outbox.mark_receipt(
                receipt.message_id, accepted=accepted, reason=receipt.reason, at=receipt.received_at
            )
            self.metrics.receipt_latency.observe(max(0.0, (self._clock() - record.sent_at).total_seconds()))
        bound.info(
            "receipt.received",
            verdict=receipt.verdict,
            reason=receipt.reason,
            audit_index=receipt.audit_index,
        )
        waiter = self._waiters.get(receipt.message_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(receipt)

    async def _keep_outstanding(self, record: OutboxRecord, receipt: Receipt) -> None:
        """A rejection that says nothing about our bytes: keep the message, re-send it at its deadline.

        E.g. `payload.undecryptable`: the data key travels in an unsigned header that anyone on the
        path can spoil, so the peer's refusal does not end a message whose signed bytes are intact.
        """
        if record.state not in (SendState.SENT, SendState.CONFIRMED):
            return
        await self._outbox.note_rejection(record.message_id, reason=str(receipt.reason))
        self.metrics.retryable_rejections.labels(str(receipt.reason)).inc()
        self._log.warning(
            "receipt.rejected_will_resend",
            message_id=str(record.message_id),
            type=record.message_type,
            peer=record.recipient,
            reason=receipt.reason,
            diagnostic=receipt.diagnostic,
            resend_at=record.deadline.isoformat(),
        )

    async def _on_witness(self, opened: OpenedMessage) -> None:
        """Keep the peer's countersignature of one of our checkpoints, if it is our log as it is.

        A countersigned root our log does not have at that size is `audit.witness_mismatch`:
        rejected, quarantined and audited as such (never receipted), for an operator to investigate.
        """
        payload = opened.payload
        assert isinstance(payload, CheckpointWitness)  # dispatched on the payload type
        envelope = opened.envelope
        bound = self._log.bind(message_id=str(envelope.id), type=envelope.type, sender=envelope.sender)
        record = countersigned_record(
            payload, sender=envelope.sender, origin=self.gateway_id, trust=self._trust
        )
        size = record.checkpoint.body.tree_size
        log_size = await self._audit.size()
        root = await self._audit.root(size) if size <= log_size else None
        check_against_log(record.checkpoint, log_size=log_size, root=root)
        received = await self._audit.find(envelope.id, kinds=[EntryKind.RECEIVED])
        if received and sha256_hex(received[0].envelope) != opened.sha256:
            raise ReplayError(
                Reason.REPLAY_CONFLICT,
                f"witness message {envelope.id} was already received (audit index {received[0].index}) "
                "with different bytes",
            )
        if received:
            bound.info("message.duplicate", audit_index=received[0].index)
            return
        [entry] = await self._audit.append(
            [self._draft(EntryKind.RECEIVED, opened, verdict=Verdict.ACCEPTED)]
        )
        self.metrics.received.labels(envelope.type).inc()
        bound.info(
            "witness.received",
            tree_size=size,
            root=record.checkpoint.body.root_hash.hex(),
            audit_index=entry.index,
        )

    # -- helpers -------------------------------------------------------------------------------
    def _default_sender(self, message_type: str) -> str:
        rule = self.agreement.rule(message_type)
        candidates = [
            a.id
            for a in self.agreement.authorities
            if a.country == self.country and set(a.roles) & set(rule.senders)
        ]
        if len(candidates) != 1:
            raise LocalError(
                Reason.POLICY_SENDER_NOT_ALLOWED,
                f"name the sender of {message_type}: {self.country} has {len(candidates)} authorities allowed "
                f"to send it ({', '.join(candidates) or 'none'})",
            )
        return candidates[0]

    def _seal_receipt(
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
        now = self._clock()
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
            sender=self.gateway_id,
            recipient=self.peer_gateway_id,
            signer=self._gateway_signer,
            created_at=now,
            correlation_id=message_id,
        )

    async def _checkpoint_covering(self, index: int) -> Checkpoint | None:
        """Our signed checkpoint that includes entry `index`, for the receipt naming it."""
        if self._checkpointer is None:
            return None
        signed = await self._checkpointer.covering(index)
        # Receipts of one window share a checkpoint: spell it for receipts once, not per receipt.
        if self._receipt_checkpoint is None or self._receipt_checkpoint[0] is not signed:
            self._receipt_checkpoint = (signed, signed.for_receipt())
        return self._receipt_checkpoint[1]

    async def _witness(self, receipt: Receipt, *, peer: str) -> None:
        """Countersign the peer's checkpoint in a receipt; a bad one is logged, the receipt still counts."""
        if self._checkpointer is None or receipt.checkpoint is None:
            return
        try:
            record = await self._checkpointer.witness(receipt.checkpoint, origin=peer)
        except RemoteError as error:
            self._log.warning(
                "checkpoint.invalid",
                message_id=str(receipt.message_id),
                reason=str(error.reason),
                diagnostic=error.diagnostic,
            )
            return
        if record is not None:
            await self._send_witness(record)

    async def _send_witness(self, record: WitnessRecord) -> None:
        """Hand our countersignature back to the checkpoint's origin (`broker.witnessing`).

        Not tracked for a receipt (none comes): one lost is logged, and the WITNESS entry stays.
        """
        sealed = seal_witness(
            record, signer=self._gateway_signer, recipient=self.peer_gateway_id, created_at=self._clock()
        )
        envelope = sealed.envelope
        bound = self._log.bind(message_id=str(envelope.id), type=envelope.type, sender=envelope.sender)
        try:
            await self._audit.append(
                [_sent_draft(self._clock(), envelope.id, envelope.type, envelope.recipient, sealed.raw)]
            )
            await self._publish_to_peer(sealed.raw, message_id=envelope.id, message_type=envelope.type)
        except LocalError as error:
            bound.warning("witness.send_failed", reason=str(error.reason), diagnostic=error.diagnostic)
            return
        self.metrics.sent.labels(envelope.type).inc()
        bound.info("witness.sent", tree_size=record.checkpoint.body.tree_size)

    def _draft(
        self, kind: EntryKind, opened: OpenedMessage, *, verdict: str, envelope: bytes | None = None
    ) -> EntryDraft:
        return EntryDraft(
            kind=kind,
            time=self._clock(),
            message_id=opened.envelope.id,
            message_type=opened.envelope.type,
            peer=opened.envelope.sender,
            envelope=opened.raw if envelope is None else envelope,
            verdict=verdict,
        )

    def _receipt_draft(
        self, receipt: SealedMessage, *, about: UUID, verdict: Verdict, reason: str | None = None
    ) -> EntryDraft:
        return EntryDraft(
            kind=EntryKind.RECEIPT_SENT,
            time=self._clock(),
            message_id=about,
            message_type=Receipt.MESSAGE_TYPE,
            peer=self.peer_gateway_id,
            envelope=receipt.raw,
            verdict=verdict,
            reason=reason,
        )

    async def trail(self, message_id: UUID) -> list[AuditEntry]:
        return await self._audit.find(message_id)


def _sent_draft(
    time: datetime, message_id: UUID, message_type: str, recipient: str, raw: bytes
) -> EntryDraft:
    """The SENT entry: the exact bytes that left, to whom."""
    return EntryDraft(
        kind=EntryKind.SENT,
        time=time,
        message_id=message_id,
        message_type=message_type,
        peer=recipient,
        envelope=raw,
    )


class GatewayRun:
    """Async context manager returned by `Gateway.from_settings`."""

    def __init__(self, *, settings: ExchangeSettings, metrics: GatewayMetrics | None) -> None:
        self._settings = settings
        self._metrics = metrics
        self._gateway: Gateway | None = None

    async def __aenter__(self) -> Gateway:
        self._gateway = await gateway_from_settings(self._settings, metrics=self._metrics)
        await self._gateway.start()
        return self._gateway

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._gateway is not None:
            await self._gateway.close()
            self._gateway = None


async def open_audit_store(settings: ExchangeSettings) -> AuditStore:
    """The audit backend the settings name: embedded SQLite by default, PostgreSQL for larger sites."""
    if settings.audit_backend == "postgres":
        from broker.audit.postgres_store import PostgresAuditStore  # noqa: PLC0415 - optional backend

        if not settings.audit_dsn:
            raise ConfigError(Reason.CONFIG_INVALID, "audit_backend=postgres needs audit_dsn")
        return await PostgresAuditStore.open(
            settings.audit_dsn,
            schema=f"audit_{settings.country.lower()}",
            plaintext_hosts=settings.plaintext_hosts,
        )
    from broker.audit.sqlite_store import SqliteAuditStore  # noqa: PLC0415 - keep driver imports at the edge

    settings.country_state_dir.mkdir(parents=True, exist_ok=True)
    return await SqliteAuditStore.open(settings.country_state_dir / "audit.sqlite")


SIGNER_REFRESH = timedelta(seconds=60)


def _cached_decryptors(keystore: KeyStore) -> Callable[[str], KeyUnwrapper]:
    """Key-agreement keys are read from disk once per authority, not once per message."""
    cache: dict[str, Decryptor] = {}

    def decryptor_for(authority_id: str) -> KeyUnwrapper:
        return _ReloadingDecryptor(authority_id=authority_id, cache=cache, keystore=keystore)

    return decryptor_for


class _ReloadingDecryptor:
    """A cached Decryptor that re-reads the authority's keys when no wrap names a key it holds (a key
    rotated since the cache was filled), so rotation never rejects a message. A wrap that names a
    held key but does not open is tampering: re-reading the disk would not help."""

    def __init__(self, *, authority_id: str, cache: dict[str, Decryptor], keystore: KeyStore) -> None:
        self._authority_id = authority_id
        self._cache = cache
        self._keystore = keystore

    def unwrap(
        self, wraps: Sequence[WrappedKey], *, message_id: UUID, dek_sha256: str | None = None
    ) -> bytes:
        decryptor = self._cache.get(self._authority_id)
        if decryptor is None or not decryptor.holds_a_key_for(wraps):
            decryptor = self._keystore.decryptor(self._authority_id)
            self._cache[self._authority_id] = decryptor
        return decryptor.unwrap(wraps, message_id=message_id, dek_sha256=dek_sha256)


async def gateway_from_settings(
    settings: ExchangeSettings, *, metrics: GatewayMetrics | None = None
) -> Gateway:
    """Assemble a gateway from settings: agreement, keys, trust, broker connection, audit, outbox."""
    from broker.keystore import KeyStore  # noqa: PLC0415
    from broker.transport import RabbitTransport  # noqa: PLC0415

    agreement = load_agreement(settings.agreement_file)
    keystore = KeyStore(root=settings.keys_dir)
    trust = keystore.trust_store(agreement.countries, crl_grace=timedelta(seconds=settings.crl_grace_s))
    gateway_id = agreement.gateway(settings.country).id
    now = utc_now()
    gateway_signer = keystore.signer(gateway_id, at=now)
    transport = await RabbitTransport.connect(url=settings.amqp_url, name=f"{gateway_id}-gateway")
    audit = await open_audit_store(settings)
    outbox = Outbox.open(settings.country_state_dir / "outbox.sqlite")

    signers: dict[str, tuple[datetime, Signer]] = {}

    def signer_for(authority_id: str) -> Signer:
        # Loading a signer reads key files and checks the chain: once a minute, not once per message.
        # A rotated or revoked key is picked up on the next load; one about to expire is never reused.
        moment = utc_now()
        cached = signers.get(authority_id)
        if (
            cached is None
            or moment - cached[0] > SIGNER_REFRESH
            or moment + SIGNER_REFRESH >= cached[1].chain[0].not_valid_after_utc
        ):
            cached = (moment, keystore.signer(authority_id, at=moment))
            signers[authority_id] = cached
        return cached[1]

    personal = PersonalDataKeys(
        directory=EncryptionDirectory.of(
            (cert for a in agreement.authorities for cert in keystore.encryption_certificates(a.id)),
            trust=trust,
            at=now,
        ),
        decryptor_for=_cached_decryptors(keystore),
        vault=KeyVault.open(settings.country_state_dir / "key-vault.sqlite"),
    )

    return Gateway(
        country=settings.country,
        agreement=agreement,
        trust=trust,
        gateway_signer=gateway_signer,
        signer_for=signer_for,
        transport=transport,
        audit=audit,
        outbox=outbox,
        settings=settings,
        metrics=metrics,
        checkpointer=Checkpointer(
            store=audit,
            signer=gateway_signer,
            trust=trust,
            every_entries=settings.checkpoint_every_entries,
            every_seconds=settings.checkpoint_every_s,
            min_interval_seconds=settings.checkpoint_min_interval_s,
        ),
        personal=personal,
        remember_trust=lambda country, change: keystore.remember_peer_trust(
            country, change.trust, key_agreement=change.key_agreement
        ),
    )
