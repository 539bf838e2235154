"""Witnessing between the two gateways: countersign the peer's checkpoints, keep its countersignatures.

A receipt from the peer carries its signed checkpoint; we countersign it (once per tree size) and hand
the countersignature back as a `checkpoint.witness` message. A witness message from the peer is kept
only if the root it countersigned is our log's root at that size (`broker.audit.witnessing`).
"""

from __future__ import annotations

from uuid import UUID

from broker.audit import EntryKind
from broker.audit.checkpoint import WitnessRecord
from broker.audit.witnessing import check_against_log, countersigned_record, seal_witness
from broker.core.catalogue.receipt import Checkpoint, Verdict
from broker.core.catalogue.witness import CheckpointWitness
from broker.core.envelope import sha256_hex
from broker.core.errors import LocalError, Reason, RemoteError, ReplayError
from broker.core.sealing import OpenedMessage
from broker.exchange.gateway.context import GatewayContext, sent_draft


class Witnessing:
    def __init__(self, ctx: GatewayContext) -> None:
        self._ctx = ctx

    async def witness(self, checkpoint: Checkpoint | None, *, peer: str, receipt_id: UUID) -> None:
        """Countersign the peer's checkpoint in a receipt; a bad one is logged, the receipt still counts."""
        ctx = self._ctx
        if ctx.checkpointer is None or checkpoint is None:
            return
        try:
            record = await ctx.checkpointer.witness(checkpoint, origin=peer)
        except RemoteError as error:
            ctx.log.warning(
                "checkpoint.invalid",
                message_id=str(receipt_id),
                reason=str(error.reason),
                diagnostic=error.diagnostic,
            )
            return
        if record is not None:
            await self._send_witness(record, to=peer)

    async def _send_witness(self, record: WitnessRecord, *, to: str) -> None:
        """Hand our countersignature back to the checkpoint's origin (`broker.audit.witnessing`).

        Not tracked for a receipt (none comes): one lost is logged, and the WITNESS entry stays.
        """
        ctx = self._ctx
        sealed = seal_witness(record, signer=ctx.gateway_signer, recipient=to, created_at=ctx.clock())
        envelope = sealed.envelope
        bound = ctx.log.bind(message_id=str(envelope.id), type=envelope.type, sender=envelope.sender)
        try:
            await ctx.audit.append(
                [sent_draft(ctx.clock(), envelope.id, envelope.type, envelope.recipient, sealed.raw)]
            )
            await ctx.publish_to_peer(sealed.raw, to=to, message_id=envelope.id, message_type=envelope.type)
        except LocalError as error:
            bound.warning("witness.send_failed", reason=str(error.reason), diagnostic=error.diagnostic)
            return
        ctx.metrics.sent.labels(envelope.type).inc()
        bound.info("witness.sent", tree_size=record.checkpoint.body.tree_size)

    async def on_witness(self, opened: OpenedMessage) -> None:
        """Keep the peer's countersignature of one of our checkpoints, if it is our log as it is.

        A countersigned root our log does not have at that size is `audit.witness_mismatch`:
        rejected, quarantined and audited as such (never receipted), for an operator to investigate.
        """
        ctx = self._ctx
        payload = opened.payload
        assert isinstance(payload, CheckpointWitness)  # dispatched on the payload type
        envelope = opened.envelope
        bound = ctx.log.bind(message_id=str(envelope.id), type=envelope.type, sender=envelope.sender)
        record = countersigned_record(payload, sender=envelope.sender, origin=ctx.gateway_id, trust=ctx.trust)
        size = record.checkpoint.body.tree_size
        log_size = await ctx.audit.size()
        root = await ctx.audit.root(size) if size <= log_size else None
        check_against_log(record.checkpoint, log_size=log_size, root=root)
        received = await ctx.audit.find(envelope.id, kinds=[EntryKind.RECEIVED])
        if received and sha256_hex(received[0].envelope) != opened.sha256:
            raise ReplayError(
                Reason.REPLAY_CONFLICT,
                f"witness message {envelope.id} was already received (audit index {received[0].index}) "
                "with different bytes",
            )
        if received:
            bound.info("message.duplicate", audit_index=received[0].index)
            return
        [entry] = await ctx.audit.append([ctx.draft(EntryKind.RECEIVED, opened, verdict=Verdict.ACCEPTED)])
        ctx.metrics.received.labels(envelope.type).inc()
        bound.info(
            "witness.received",
            tree_size=size,
            root=record.checkpoint.body.root_hash.hex(),
            audit_index=entry.index,
        )
