"""Assembling a gateway from its settings: agreement, keys, trust, broker connection, audit, outbox.

Drivers are imported here, at the edge, and only when a gateway is actually assembled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING
from uuid import UUID

from broker.audit.stores import AuditStore
from broker.audit.stores.checkpointer import Checkpointer
from broker.core.agreement import load_agreement
from broker.core.errors import ConfigError, Reason
from broker.core.personal import Decryptor, WrappedKey
from broker.core.pki import Signer
from broker.core.trust_update import EncryptionDirectory
from broker.exchange.gateway.context import GatewayContext, utc_now
from broker.exchange.gateway.gateway import Gateway
from broker.exchange.metrics import GatewayMetrics
from broker.exchange.personal_keys import KeyUnwrapper, PersonalDataKeys
from broker.state.key_vault import KeyVault
from broker.state.outbox import Outbox
from broker.state.settings import ExchangeSettings
from broker.state.submissions import SubmissionLedger

if TYPE_CHECKING:
    from broker.state.keystore import KeyStore


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
        from broker.audit.stores.postgres import PostgresAuditStore  # noqa: PLC0415 - optional backend

        if not settings.audit_dsn:
            raise ConfigError(Reason.CONFIG_INVALID, "audit_backend=postgres needs audit_dsn")
        return await PostgresAuditStore.open(
            settings.audit_dsn,
            schema=f"audit_{settings.country.lower()}",
            plaintext_hosts=settings.plaintext_hosts,
        )
    from broker.audit.stores.sqlite import SqliteAuditStore  # noqa: PLC0415 - keep driver imports at the edge

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
    from broker.exchange.transport import RabbitTransport  # noqa: PLC0415
    from broker.state.keystore import KeyStore  # noqa: PLC0415

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

    context = GatewayContext(
        country=settings.country,
        agreement=agreement,
        trust=trust,
        gateway_signer=gateway_signer,
        signer_for=signer_for,
        transport=transport,
        audit=audit,
        outbox=outbox,
        settings=settings,
        metrics=metrics or GatewayMetrics(),
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
        remember_trust=lambda country, change: keystore.remember_peer_trust(
            country, change.trust, key_agreement=change.key_agreement
        ),
    )
