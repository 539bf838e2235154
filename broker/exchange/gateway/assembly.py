"""Assembling a gateway from its settings: agreement, keys, trust, broker connection, audit, outbox.

Drivers are imported here, at the edge, and only when a gateway is actually assembled. `GatewayRun`
(what `broker gateway` runs) first takes the audit log's writer lock, waiting as a standby while
another process of the same country holds it (`standby`).
"""

from __future__ import annotations

from datetime import timedelta
from types import TracebackType

from broker.audit.stores import AuditStore
from broker.audit.stores.checkpointer import Checkpointer
from broker.audit.stores.writer_lock import WriterLock
from broker.core.agreement_set import load_agreements
from broker.core.errors import ConfigError, Reason
from broker.exchange.gateway.context import Clock, GatewayContext, utc_now
from broker.exchange.gateway.gateway import Gateway
from broker.exchange.gateway.keys import GatewayKeys, KeyWatcher, key_store_fingerprint
from broker.exchange.gateway.standby import ActiveRole
from broker.exchange.metrics import GatewayMetrics
from broker.exchange.personal_keys import PersonalDataKeys
from broker.state.exposure import refuse_exposed_secrets
from broker.state.key_vault import KeyVault
from broker.state.outbox import Outbox
from broker.state.settings import ExchangeSettings
from broker.state.submissions import SubmissionLedger


class GatewayRun:
    """Async context manager returned by `Gateway.from_settings`: waits for the writer lock (as a
    standby), assembles and starts the gateway; on leaving, closes it and lets the lock go.

    `role`: the caller's, to show the standby on a status port while this waits; else one of its own.
    Losing the lock later stops the gateway and sets `role.lost`.
    """

    def __init__(
        self, *, settings: ExchangeSettings, metrics: GatewayMetrics | None, role: ActiveRole | None = None
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self.role = role or ActiveRole.from_settings(settings)
        self._gateway: Gateway | None = None

    async def __aenter__(self) -> Gateway:
        check_before_start(self._settings)  # told at once, not after waiting for the lock
        await self.role.wait_until_active()
        try:
            gateway = await gateway_from_settings(
                self._settings, metrics=self._metrics, writer_lock=self.role.lock
            )
            self._gateway = gateway
            await gateway.start()
        except BaseException:
            await self._close()
            raise
        self.role.watch(on_lost=gateway.stop)
        return gateway

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        try:
            if self._gateway is not None:
                await self._gateway.close()
                self._gateway = None
        finally:
            # Last: whatever the gateway still wrote while closing was written under the lock.
            await self.role.release()


def check_before_start(settings: ExchangeSettings) -> None:
    """A key or password others may read, or a missing password: told before anything opens."""
    refuse_exposed_secrets(keys_dir=settings.keys_dir, secret_files=[settings.secrets_file])
    settings.broker_url()


async def open_audit_store(
    settings: ExchangeSettings, *, writer_lock: WriterLock | None = None
) -> AuditStore:
    """The audit backend the settings name: embedded SQLite by default, PostgreSQL for larger sites.

    `writer_lock`: the PostgreSQL writer lock this process holds; every write then checks it.
    """
    if settings.audit_backend == "postgres":
        from broker.audit.stores.postgres import PostgresAuditStore  # noqa: PLC0415 - optional backend
        from broker.audit.stores.postgres_lock import PostgresWriterLock  # noqa: PLC0415

        if not settings.audit_dsn:
            raise ConfigError(Reason.CONFIG_INVALID, "audit_backend=postgres needs audit_dsn")
        store = await PostgresAuditStore.open(
            settings.audit_dsn,
            schema=f"audit_{settings.country.lower()}",
            plaintext_hosts=settings.plaintext_hosts,
        )
        if isinstance(writer_lock, PostgresWriterLock):
            store.require_writer_lock(writer_lock.fence)
        return store
    from broker.audit.stores.sqlite import SqliteAuditStore  # noqa: PLC0415 - keep driver imports at the edge

    settings.country_state_dir.mkdir(parents=True, exist_ok=True)
    return await SqliteAuditStore.open(settings.country_state_dir / "audit.sqlite")


async def gateway_from_settings(
    settings: ExchangeSettings,
    *,
    metrics: GatewayMetrics | None = None,
    clock: Clock = utc_now,
    writer_lock: WriterLock | None = None,
) -> Gateway:
    """Assemble a gateway from settings: agreement, keys, trust, broker connection, audit, outbox.

    `clock` is the gateway's time for messages, receipts and deadlines (a simulation shortens it).
    Takes no writer lock itself (`GatewayRun` does; a test or benchmark holds the state to itself);
    `writer_lock` is the one the caller holds, which PostgreSQL writes then check.
    """
    from broker.exchange.transport import RabbitTransport  # noqa: PLC0415
    from broker.state.keystore import KeyStore  # noqa: PLC0415

    check_before_start(settings)
    broker_url = settings.broker_url()
    agreement = load_agreements(settings.country, settings.agreements, default=settings.agreement_file)
    keys = GatewayKeys(
        keystore=KeyStore(root=settings.keys_dir),
        agreement=agreement,
        country=settings.country,
        crl_grace=timedelta(seconds=settings.crl_grace_s),
    )
    # Looked at before reading: a change made while we read is seen by the first check.
    fingerprint = key_store_fingerprint(settings.keys_dir)
    material = keys.load(utc_now())
    gateway_id = agreement.gateway(settings.country).id
    transport = await RabbitTransport.connect(
        url=broker_url, name=f"{gateway_id}-gateway", failover=settings.failover_urls(broker_url)
    )
    audit = await open_audit_store(settings, writer_lock=writer_lock)
    outbox = Outbox.open(settings.country_state_dir / "outbox.sqlite")
    personal = PersonalDataKeys(
        directory=material.directory,
        decryptor_for=keys.decryptor_for,
        vault=KeyVault.open(settings.country_state_dir / "key-vault.sqlite"),
        auditors=agreement.holders_of("auditor", settings.country),
    )

    trust, gateway_signer = material.trust, material.gateway_signer
    context = GatewayContext(
        country=settings.country,
        agreement=agreement,
        trust=trust,
        gateway_signer=gateway_signer,
        signer_for=lambda authority_id: keys.signer_for(authority_id, at=utc_now()),
        transport=transport,
        audit=audit,
        outbox=outbox,
        settings=settings,
        metrics=metrics or GatewayMetrics(),
        clock=clock,
        checkpointer=Checkpointer(
            store=audit,
            signer=gateway_signer,
            trust=trust,
            every_entries=settings.checkpoint_every_entries,
            every_seconds=settings.checkpoint_every_s,
            min_interval_seconds=settings.checkpoint_min_interval_s,
        ),
        personal=personal,
        submissions=SubmissionLedger.open(settings.country_state_dir / "submissions.sqlite"),
    )
    return Gateway(
        context=context,
        remember_trust=lambda country, change: keys.keystore.remember_peer_trust(
            country, change.trust, key_agreement=change.key_agreement
        ),
        key_watcher=KeyWatcher(
            context,
            keys=keys,
            loaded=material,
            fingerprint=fingerprint,
            interval_s=settings.keys_reload_interval_s,
        ),
    )
