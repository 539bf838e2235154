"""What every role of a gateway shares: its identity, its dependencies, and how it talks to the peer.

Trust material and the gateway's own signer are replaced at run time (trust updates, key reloads);
the roles read them from here at each use, so a replacement reaches all of them at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import structlog

from broker.audit import EntryDraft, EntryKind
from broker.audit.stores import AuditStore
from broker.audit.stores.checkpointer import Checkpointer
from broker.core.agreement import Agreement
from broker.core.pki import Signer
from broker.core.sealing import OpenedMessage
from broker.core.trust import TrustStore
from broker.exchange.metrics import GatewayMetrics
from broker.exchange.personal_keys import PersonalDataKeys, sealed_key_headers
from broker.exchange.topology import OUTBOUND
from broker.exchange.transport_api import Transport
from broker.state.outbox import Outbox
from broker.state.settings import ExchangeSettings
from broker.state.submissions import SubmissionLedger

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(kw_only=True)
class GatewayContext:
    """The gateway's dependencies, given once (keyword-only), and what its roles derive from them."""

    country: str
    agreement: Agreement
    trust: TrustStore
    gateway_signer: Signer
    signer_for: Callable[[str], Signer]
    transport: Transport
    audit: AuditStore
    outbox: Outbox
    settings: ExchangeSettings
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    clock: Clock = utc_now
    checkpointer: Checkpointer | None = None
    # Without it, personal payloads travel in clear (a development setup without key agreement).
    personal: PersonalDataKeys | None = None
    # Without it, the gateway takes no submissions from ministry systems (only `Gateway.send`).
    submissions: SubmissionLedger | None = None
    log: Any = field(init=False)  # a structlog logger bound to this gateway and its peer
    peer_country: str = field(init=False)
    gateway_id: str = field(init=False)
    peer_gateway_id: str = field(init=False)
    # Set while stopping: an own failure is no longer retried but raised.
    stopping: bool = field(default=False, init=False)
    # Held while trust material is changed (a trust update written and applied, a key store reload),
    # so one never swaps in what it read while the other is half done.
    key_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    # Messages this process put into outbound.<peer> (confirmed): with the queue's depth, it tells
    # whether a copy published earlier can still be waiting there (`Sender`, re-sends).
    published_to_peer: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.peer_country = self.agreement.peer_country(self.country)
        self.gateway_id = self.agreement.gateway(self.country).id
        self.peer_gateway_id = self.agreement.gateway(self.peer_country).id
        self.log = structlog.get_logger("broker.exchange.gateway").bind(
            gateway=self.gateway_id, peer=self.peer_gateway_id
        )

    async def publish_to_peer(
        self, raw: bytes, *, message_id: UUID, message_type: str, sealed_key: str | None = None
    ) -> None:
        await self.transport.publish(
            exchange=OUTBOUND,
            routing_key=self.peer_country.lower(),
            body=raw,
            message_id=str(message_id),
            headers={"x-type": message_type, **sealed_key_headers(sealed_key)},
            timeout=self.settings.confirm_timeout_s,
        )
        self.published_to_peer += 1

    def draft(
        self, kind: EntryKind, opened: OpenedMessage, *, verdict: str, envelope: bytes | None = None
    ) -> EntryDraft:
        """An audit entry about a message that arrived: its exact bytes unless `envelope` says otherwise."""
        return EntryDraft(
            kind=kind,
            time=self.clock(),
            message_id=opened.envelope.id,
            message_type=opened.envelope.type,
            peer=opened.envelope.sender,
            envelope=opened.raw if envelope is None else envelope,
            verdict=verdict,
        )


def sent_draft(time: datetime, message_id: UUID, message_type: str, recipient: str, raw: bytes) -> EntryDraft:
    """The SENT entry: the exact bytes that left, to whom."""
    return EntryDraft(
        kind=EntryKind.SENT,
        time=time,
        message_id=message_id,
        message_type=message_type,
        peer=recipient,
        envelope=raw,
    )
