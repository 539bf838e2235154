"""The submission role of a gateway: take messages from its country's ministry systems, send them, answer.

A ministry system publishes to `submit` as its own RabbitMQ user (wire format: `broker.exchange.
submission`). Per submission, in order: the validated `user_id` names a submitter → size, strict
JSON and model → one at a time per submitter and request id: the ledger (a repeated request is
answered with the message it made) → seal the payload with a sender among the submitter's
authorities, or check the ministry's own sealed envelope → ledger row → outbox row, audit SENT,
publish (`Sender.record_and_publish`) → answer `accepted` → ack. The peer's receipt is passed on to
the same `reply_to` when it comes back.

A refusal is answered and acked: nothing was recorded, and the submitter may correct and submit
again. Our own failure before the outbox row (ledger, outbox or key vault unavailable) leaves the
submission queued for another try; once the outbox row exists the message belongs to the resend
loop, and the submission is accepted even if its first publish failed. A submission that breaks
the gateway (a bug) is refused as `internal.error`, never requeued into a loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from broker.core.catalogue import parse_payload, payload_class
from broker.core.catalogue.receipt import Receipt
from broker.core.errors import ExchangeError, LocalError, Reason
from broker.core.ids import uuid7
from broker.core.personal import is_sealed
from broker.core.sealing import SealedMessage, check_freshness, peek, verify_envelope
from broker.exchange.gateway.context import GatewayContext
from broker.exchange.gateway.message_locks import PerMessageLocks
from broker.exchange.gateway.sending import Sender
from broker.exchange.ministries import submitter_users, submitting_authorities, vhost_of
from broker.exchange.submission import (
    Accepted,
    ReceiptNews,
    Refused,
    Submission,
    encode_answer,
    max_submission_bytes,
    parse_submission,
    refused,
)
from broker.exchange.transport_api import Disposition, IncomingMessage
from broker.state.outbox import OutboxRecord, SendState
from broker.state.submissions import SubmissionLedger

# Own failures: the submission stays queued and is tried again after this pause.
OWN_FAILURES = frozenset({Reason.AUDIT_UNAVAILABLE})
OWN_FAILURE_PAUSE_S = 1.0
# Submissions whose receipt is still to be passed on; beyond this the oldest are forgotten (their
# submitters follow them with `broker status`).
MAX_AWAITED_RECEIPTS = 10_000
# Only RabbitMQ's direct reply-to addresses are answered: any other `reply_to` would make the gateway
# publish into a queue of its own vhost (its `inbound`, a consulate's queue) through the default exchange.
REPLY_TO_PREFIX = "amq.rabbitmq.reply-to."
MAX_CORRELATION_ID = 255
_LOCK_NAMESPACE = uuid5(NAMESPACE_URL, "urn:labour-exchange:submission")

Answers = list[Accepted | Refused | ReceiptNews]


@dataclass(frozen=True)
class _ReplyAddress:
    reply_to: str
    correlation_id: str | None
    request_id: str


class Submissions:
    def __init__(self, ctx: GatewayContext, *, sender: Sender, ledger: SubmissionLedger) -> None:
        self._ctx = ctx
        self._sender = sender
        self._ledger = ledger
        users = submitter_users(
            vhost_of(ctx.settings.amqp_url), ctx.country, submitting_authorities(ctx.agreements, ctx.country)
        )
        # RabbitMQ user → the authorities it may submit as (one per user in the plan's naming).
        self.authorities_of: dict[str, tuple[str, ...]] = {
            user: (authority,) for user, authority in users.items()
        }
        self._max_bytes = max_submission_bytes(ctx.settings.max_message_bytes)
        self._locks = PerMessageLocks()
        self._awaiting: dict[UUID, _ReplyAddress] = {}
        sender.watch_receipts(self.on_receipt)

    async def on_submission(self, incoming: IncomingMessage) -> Disposition:
        correlation_id = (incoming.correlation_id or "")[:MAX_CORRELATION_ID] or None
        log = self._ctx.log.bind(submitter=incoming.user_id, request_id=correlation_id)
        try:
            answers = await self._take(incoming, log)
        except ExchangeError as error:
            if error.reason in OWN_FAILURES:
                log.warning("submission.own_failure", reason=str(error.reason), diagnostic=error.diagnostic)
                await asyncio.sleep(OWN_FAILURE_PAUSE_S)
                return Disposition.REQUEUE
            answers = [refused(error, correlation_id)]
        except Exception as bug:  # a bug: answered, never requeued into a loop
            log.exception("submission.crashed", reason=str(Reason.INTERNAL_ERROR))
            answers = [
                Refused(
                    request_id=correlation_id,
                    reason=str(Reason.INTERNAL_ERROR),
                    diagnostic=f"the gateway failed on this submission ({type(bug).__name__}); nothing was sent",
                )
            ]
        for answer in answers:
            if isinstance(answer, Refused):
                self._ctx.metrics.submissions.labels(answer.reason).inc()
                log.warning("submission.refused", reason=answer.reason, diagnostic=answer.diagnostic)
            await self._answer(incoming.reply_to, correlation_id, answer)
        return Disposition.ACK

    async def on_receipt(self, receipt: Receipt, final: bool) -> None:
        """Pass the peer's receipt on to the submitter that is waiting for it."""
        address = (
            self._awaiting.pop(receipt.message_id, None) if final else self._awaiting.get(receipt.message_id)
        )
        if address is None:
            return
        news = ReceiptNews(
            request_id=address.request_id,
            message_id=receipt.message_id,
            verdict=receipt.verdict.value,
            reason=receipt.reason,
            diagnostic=receipt.diagnostic,
            audit_index=receipt.audit_index,
            final=final,
        )
        await self._answer(address.reply_to, address.correlation_id, news)

    # -- taking a submission ---------------------------------------------------------------------
    async def _take(self, incoming: IncomingMessage, log: Any) -> Answers:
        submitter = incoming.user_id or ""
        authorities = self.authorities_of.get(submitter)
        if not authorities:
            raise LocalError(
                Reason.POLICY_SUBMITTER_NOT_ALLOWED,
                f"RabbitMQ user {submitter!r} submits for no authority of {self._ctx.country}"
                if submitter
                else "the submission carries no user_id: set it to the RabbitMQ user you connect as",
            )
        submission, digest = parse_submission(incoming.body, max_bytes=self._max_bytes)
        async with self._locks.hold(uuid5(_LOCK_NAMESPACE, f"{submitter}\n{submission.request_id}")):
            answers = await self._take_once(submitter, authorities, submission, digest, log)
        accepted = answers[0]
        if isinstance(accepted, Accepted) and incoming.reply_to and len(answers) == 1:
            self._remember(accepted.message_id, incoming, submission.request_id)
        return answers

    async def _take_once(
        self, submitter: str, authorities: tuple[str, ...], submission: Submission, digest: str, log: Any
    ) -> Answers:
        ctx = self._ctx
        record = await self._ledger.get(submitter, submission.request_id)
        if record is not None and record.request_sha256 != digest:
            raise LocalError(
                Reason.SUBMISSION_REQUEST_REUSED,
                f"request id {submission.request_id!r} was used on {record.recorded_at:%Y-%m-%d %H:%M:%S}Z for "
                f"another submission (message {record.message_id}); use a new request id",
            )
        if record is not None:
            earlier = await ctx.outbox.get(record.message_id)
            if earlier is not None:
                ctx.metrics.submissions.labels("repeated").inc()
                return _repeated(earlier, submission.request_id)
        sealed, sealed_key = self._prepare(authorities, submission)
        earlier = await ctx.outbox.get(sealed.envelope.id)
        if earlier is not None:  # a ministry's envelope submitted again under another request id
            if earlier.sha256 != sealed.sha256:
                raise LocalError(
                    Reason.REPLAY_CONFLICT,
                    f"message id {sealed.envelope.id} was sent before with other bytes",
                )
            await self._ledger.claim(
                submitter, submission.request_id, request_sha256=digest, message_id=earlier.message_id
            )
            return _repeated(earlier, submission.request_id)
        if record is None:
            await self._ledger.claim(
                submitter, submission.request_id, request_sha256=digest, message_id=sealed.envelope.id
            )
        else:
            # Recorded, but the gateway stopped before the outbox row: the earlier id never left.
            await self._ledger.move(submitter, submission.request_id, message_id=sealed.envelope.id)
        try:
            await self._sender.record_and_publish(sealed, sealed_key=sealed_key)
        except ExchangeError as error:
            if await ctx.outbox.get(sealed.envelope.id) is None:
                raise
            # In the outbox: the resend loop publishes it at its deadline.
            log.warning(
                "submission.publish_deferred", message_id=str(sealed.envelope.id), reason=str(error.reason)
            )
        ctx.metrics.submissions.labels("accepted").inc()
        envelope = sealed.envelope
        log.info(
            "submission.accepted", message_id=str(envelope.id), type=envelope.type, sender=envelope.sender
        )
        return [
            Accepted(
                request_id=submission.request_id,
                message_id=envelope.id,
                sha256=sealed.sha256,
                type=envelope.type,
                sender=envelope.sender,
                to=envelope.recipient,
            )
        ]

    def _prepare(
        self, authorities: tuple[str, ...], submission: Submission
    ) -> tuple[SealedMessage, str | None]:
        """The sealed message to send: the payload sealed by us, or the ministry's envelope checked."""
        ctx = self._ctx
        if submission.sealed is None:
            assert submission.type is not None  # the model requires type and to with a payload
            assert submission.to is not None
            payload = parse_payload(submission.type, submission.version, submission.payload_bytes())
            sender = self._sender_for(authorities, submission.type, submission.sender)
            return self._sender.seal_outgoing(
                payload,
                to=submission.to,
                sender=sender,
                correlation_id=submission.correlation_id,
                message_id=uuid7(),
            )
        raw = submission.envelope_bytes()
        now = ctx.clock()
        verified = verify_envelope(
            raw,
            trust=ctx.trust,
            agreement=ctx.agreements,
            max_bytes=ctx.settings.max_message_bytes,
            received_at=now,
        )
        envelope = verified.envelope
        if envelope.sender not in authorities:
            raise LocalError(
                Reason.POLICY_SUBMITTER_NOT_ALLOWED,
                f"the envelope is signed by {envelope.sender}; this submitter submits for {', '.join(authorities)}",
            )
        check_freshness(
            envelope,
            now=now,
            max_age=timedelta(seconds=ctx.settings.max_message_age_s),
            max_skew=timedelta(seconds=ctx.settings.max_clock_skew_s),
        )
        personal = ctx.personal is not None and payload_class(envelope.type, envelope.version).PERSONAL
        if personal and (not is_sealed(envelope.payload) or submission.sealed_key is None):
            raise LocalError(
                Reason.PAYLOAD_NOT_SEALED,
                f"{envelope.type} carries personal data: seal its payload for the recipient and give "
                "the wrapped data key as `sealed_key`",
            )
        return SealedMessage(envelope=envelope, raw=raw, sha256=verified.sha256), submission.sealed_key

    def _sender_for(self, authorities: tuple[str, ...], message_type: str, named: str | None) -> str:
        if named is not None:
            if named not in authorities:
                raise LocalError(
                    Reason.POLICY_SUBMITTER_NOT_ALLOWED,
                    f"this submitter submits for {', '.join(authorities)}, not for {named}",
                )
            return named
        allowed = [
            a for a in authorities if a in self._ctx.agreements.senders_of(message_type, self._ctx.country)
        ]
        if len(allowed) == 1:
            return allowed[0]
        if len(authorities) == 1:
            return authorities[0]  # the agreement's check names why it may not send this type
        raise LocalError(
            Reason.POLICY_SUBMITTER_NOT_ALLOWED,
            f"name the sender of {message_type}: this submitter submits for {', '.join(authorities)}",
        )

    # -- answering -------------------------------------------------------------------------------
    def _remember(self, message_id: UUID, incoming: IncomingMessage, request_id: str) -> None:
        assert incoming.reply_to is not None
        self._awaiting[message_id] = _ReplyAddress(
            reply_to=incoming.reply_to,
            correlation_id=(incoming.correlation_id or "")[:MAX_CORRELATION_ID] or None,
            request_id=request_id,
        )
        while len(self._awaiting) > MAX_AWAITED_RECEIPTS:
            del self._awaiting[next(iter(self._awaiting))]

    async def _answer(
        self, reply_to: str | None, correlation_id: str | None, answer: Accepted | Refused | ReceiptNews
    ) -> None:
        """Publish `answer` to the submitter's direct reply-to address; a gone submitter loses nothing."""
        if not reply_to or not reply_to.startswith(REPLY_TO_PREFIX):
            self._ctx.log.info(
                "submission.not_answered", reply_to=(reply_to or "")[:80], status=answer.status
            )
            return
        try:
            await self._ctx.transport.publish(
                exchange="",
                routing_key=reply_to,
                body=encode_answer(answer),
                message_id=str(uuid7()),
                correlation_id=correlation_id,
                mandatory=False,
                timeout=self._ctx.settings.confirm_timeout_s,
            )
        except ExchangeError as error:
            self._ctx.log.warning("submission.answer_failed", reason=str(error.reason), status=answer.status)


def _repeated(earlier: OutboxRecord, request_id: str) -> Answers:
    """The answers a repeated request gets: the message it made, and its receipt if one came."""
    answers: Answers = [
        Accepted(
            request_id=request_id,
            message_id=earlier.message_id,
            sha256=earlier.sha256,
            type=earlier.message_type,
            sender=peek(earlier.raw).sender or "",
            to=earlier.recipient,
            repeated=True,
        )
    ]
    if earlier.state in (SendState.RECEIPTED, SendState.REJECTED):
        answers.append(
            ReceiptNews(
                request_id=request_id,
                message_id=earlier.message_id,
                verdict="accepted" if earlier.state is SendState.RECEIPTED else "rejected",
                reason=earlier.reason,
            )
        )
    return answers
