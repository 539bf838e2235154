"""A country's gateway: the one object that wires its roles together and owns start and stop.

The roles, each in its own module: `Sender` (send, outbox, re-send, receipts coming back),
`Receiver` (verify, accept, deliver, reject), `Receipts` (answering the peer), `Witnessing`
(countersigning checkpoints both ways), `TrustUpdates` (the peer CA's updates) and `Submissions`
(messages the country's ministry systems hand over on the `submit` queue).
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Self, Unpack
from uuid import UUID

from broker.audit import AuditEntry
from broker.audit.stores import AuditStore
from broker.core.catalogue import Payload
from broker.core.errors import ConfigError, Reason, TransportError
from broker.core.pki import Signer
from broker.core.sealing import SealedMessage
from broker.core.trust import TrustStore
from broker.exchange.gateway.context import GatewayContext
from broker.exchange.gateway.receipts import Receipts
from broker.exchange.gateway.receiving import Receiver
from broker.exchange.gateway.sending import Sender, SendOptions, SendResult
from broker.exchange.gateway.submissions import Submissions
from broker.exchange.gateway.trust_updates import RememberTrust, TrustUpdates
from broker.exchange.gateway.witnessing import Witnessing
from broker.exchange.health import PeerLink, Readiness, check_readiness
from broker.exchange.metrics import GatewayMetrics
from broker.exchange.personal_keys import PersonalDataKeys
from broker.exchange.topology import INBOUND, SUBMIT
from broker.exchange.transport_api import ConsumerHandle
from broker.state.outbox import Outbox
from broker.state.settings import ExchangeSettings

if TYPE_CHECKING:
    from broker.exchange.gateway.assembly import GatewayRun
    from broker.exchange.gateway.keys import KeyWatcher
    from broker.exchange.gateway.standby import ActiveRole


class Gateway:
    def __init__(
        self,
        *,
        context: GatewayContext,
        remember_trust: RememberTrust | None = None,
        key_watcher: KeyWatcher | None = None,
    ) -> None:
        """`context` holds every dependency; `remember_trust` keeps applied trust updates on disk;
        `key_watcher` follows the key store while the gateway runs."""
        self._ctx = ctx = context
        self._key_watcher = key_watcher
        self.country = ctx.country
        self.peer_country = ctx.peer_country  # the first agreement's peer
        self.peers = ctx.peers
        self.agreement = ctx.agreements
        self.gateway_id = ctx.gateway_id
        self.peer_gateway_id = ctx.peer_gateway_id
        self.metrics = ctx.metrics
        receipts = Receipts(ctx)
        witnessing = Witnessing(ctx)
        self._sender = Sender(ctx, witnessing=witnessing)
        self._receiver = Receiver(
            ctx,
            sender=self._sender,
            receipts=receipts,
            witnessing=witnessing,
            trust_updates=TrustUpdates(
                ctx, receipts=receipts, replace_trust=self.replace_trust, remember=remember_trust
            ),
        )
        self._submissions = (
            None if ctx.submissions is None else Submissions(ctx, sender=self._sender, ledger=ctx.submissions)
        )
        self._consumers: list[ConsumerHandle] = []

    @classmethod
    def from_settings(
        cls,
        settings: ExchangeSettings,
        *,
        metrics: GatewayMetrics | None = None,
        role: ActiveRole | None = None,
    ) -> GatewayRun:
        """`async with Gateway.from_settings(settings) as gw:` takes the writer lock (waiting as a
        standby while another gateway of the country holds it), assembles, starts, and finally closes."""
        from broker.exchange.gateway.assembly import GatewayRun  # noqa: PLC0415 - assembly imports us

        return GatewayRun(settings=settings, metrics=metrics, role=role)

    @property
    def trust(self) -> TrustStore:
        return self._ctx.trust

    def replace_trust(self, trust: TrustStore) -> None:
        """Swap in new trust material (a trust update, a re-imported bundle) without a restart."""
        self._ctx.trust = trust
        if self._ctx.checkpointer is not None:
            self._ctx.checkpointer.replace_trust(trust)

    async def reload_keys(self) -> bool:
        """Read the key store again now (it is also watched, `keys_reload_interval_s`); True if
        anything changed. A store that does not read is logged and the keys held are kept."""
        if self._key_watcher is None:
            return False
        return await self._key_watcher.check(force=True)

    def replace_gateway_signer(self, signer: Signer) -> None:
        """Sign receipts, checkpoints and countersignatures with a rotated gateway key from now on."""
        self._ctx.gateway_signer = signer
        if self._ctx.checkpointer is not None:
            self._ctx.checkpointer.replace_signer(signer)

    @property
    def submitters(self) -> tuple[str, ...]:
        """The RabbitMQ users of ministry systems this gateway takes submissions from."""
        return () if self._submissions is None else tuple(self._submissions.authorities_of)

    @property
    def personal(self) -> PersonalDataKeys | None:
        return self._ctx.personal

    @property
    def outbox(self) -> Outbox:
        return self._ctx.outbox

    @property
    def audit(self) -> AuditStore:
        return self._ctx.audit

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        ctx = self._ctx
        ctx.stopping = False
        self._consumers.append(
            await ctx.transport.consume(INBOUND, self._receiver.on_inbound, prefetch=ctx.settings.prefetch)
        )
        if self._submissions is not None:
            self._consumers.append(await self._consume_submissions(self._submissions))
        self._sender.start()
        if ctx.checkpointer is not None:
            await ctx.checkpointer.start()
        if self._key_watcher is not None:
            self._key_watcher.start(self)
        ctx.log.info("gateway.started")

    async def stop(self) -> None:
        ctx = self._ctx
        if ctx.stopping:
            return  # already stopped (close() after `async with`, or a second signal)
        ctx.stopping = True
        if self._key_watcher is not None:
            await self._key_watcher.stop()
        await self._sender.stop_resending()
        while self._consumers:
            await self._consumers.pop().cancel()
        self._sender.cancel_waiters()
        if ctx.checkpointer is not None:
            await ctx.checkpointer.stop()  # last: its final checkpoint covers everything logged
        ctx.log.info("gateway.stopped")

    async def _consume_submissions(self, submissions: Submissions) -> ConsumerHandle:
        ctx = self._ctx
        try:
            return await ctx.transport.consume(
                SUBMIT, submissions.on_submission, prefetch=ctx.settings.prefetch
            )
        except TransportError as error:
            if error.reason is not Reason.CONFIG_INVALID:
                raise
            raise ConfigError(
                Reason.CONFIG_INVALID,
                f"{ctx.country}'s broker has no `{SUBMIT}` queue for ministry systems: apply the topology "
                f"again (`broker topology apply`), which adds it ({error.diagnostic})",
            ) from None

    async def close(self) -> None:
        """Stop, then release the broker connection, the audit store, the outbox and the ledger."""
        await self.stop()
        await self._ctx.transport.close()
        await self._ctx.audit.close()
        self._ctx.outbox.close()
        if self._ctx.submissions is not None:
            self._ctx.submissions.close()
        if self._ctx.personal is not None:
            self._ctx.personal.vault.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- sending -------------------------------------------------------------------------------
    async def send(self, payload: Payload, *, to: str, **options: Unpack[SendOptions]) -> SendResult:
        """Seal `payload`, publish it to the peer and optionally wait for its receipt (`SendOptions`)."""
        return await self._sender.send(payload, to=to, **options)

    async def publish_sealed(self, sealed: SealedMessage) -> None:
        """Send bytes sealed elsewhere (a ministry system that signs with its own keys) and track them.

        The gateway does not re-check them: the peer verifies, and a fault comes back as a negative
        receipt, which is what the ministry needs to see.
        """
        await self._sender.record_and_publish(sealed)

    async def resend_overdue(self) -> int:
        """Re-send, with the same id and bytes, every message whose receipt deadline has passed."""
        return await self._sender.resend_overdue()

    async def trail(self, message_id: UUID) -> list[AuditEntry]:
        return await self._ctx.audit.find(message_id)

    async def readiness(self, link: PeerLink | None = None) -> Readiness:
        """Broker connection, audit store and keys checked now, and the peer link given `link` (`health`)."""
        return await check_readiness(self._ctx, link)


__all__ = ["Gateway", "SendResult"]
