"""What every role of a gateway shares: its identity, its dependencies, and how it talks to its peers.

A gateway serves one agreement per peer country (`AgreementSet`); whatever it publishes goes into
`outbound.<peer>` of the country it is addressed to, so each peer has its own queue and shovel.

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
from broker.core.agreement_set import Agreements, AgreementSet
from broker.core.errors import PolicyError
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
    # One agreement, or the set of them (one per peer country); read as the set, `agreements`.
    agreement: Agreements
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
    log: Any = field(init=False)  # a structlog logger bound to this gateway
    agreements: AgreementSet = field(init=False)
    peers: tuple[str, ...] = field(init=False)
    # The first agreement's peer, and its gateway: what single-link tools (readiness) look at.
    peer_country: str = field(init=False)
    gateway_id: str = field(init=False)
    peer_gateway_id: str = field(init=False)
    # Set while stopping: an own failure is no longer retried but raised.
    stopping: bool = field(default=False, init=False)
    # Held while trust material is changed (a trust update written and applied, a key store reload),
    # so one never swaps in what it read while the other is half done.
    key_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    # Per peer country, messages this process put into outbound.<peer> (confirmed): with the queue's
    # depth, it tells whether a copy published earlier can still be waiting there (`Sender`, re-sends).
    published_to_peer: dict[str, int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.agreements = (
            self.agreement
            if isinstance(self.agreement, AgreementSet)
            else AgreementSet.single(self.agreement, self.country)
        )
        self.peers = self.agreements.peers
        self.peer_country = self.peers[0]
        self.gateway_id = self.agreements.gateway(self.country).id
        self.peer_gateway_id = self.agreements.gateway(self.peer_country).id
        self.log = structlog.get_logger("broker.exchange.gateway").bind(
            gateway=self.gateway_id, peers=",".join(self.peers)
        )

    def country_of(self, authority_id: str) -> str:
        """The country of an authority of our agreements (PolicyError when it is party to none)."""
        return self.agreements.authority(authority_id).country

    def answer_countries(self, claimed_sender: str | None) -> tuple[str, ...]:
        """Where an answer to bytes from `claimed_sender` goes: its country when that is a peer's;
        every peer when the bytes name nobody we know (only a peer's link can put bytes into our
        inbound queue, and the one whose bytes they are matches them against its outbox)."""
        if claimed_sender is not None:
            try:
                country = self.country_of(claimed_sender)
            except PolicyError:
                return self.peers
            if country in self.peers:
                return (country,)
        return self.peers

    async def publish_to_peer(
        self,
        raw: bytes,
        *,
        to: str,
        message_id: UUID,
        message_type: str,
        sealed_key: str | None = None,
    ) -> None:
        """Publish into `outbound.<peer>` of the country of authority `to` (the link to that peer)."""
        peer = self.country_of(to)
        await self.transport.publish(
            exchange=OUTBOUND,
            routing_key=peer.lower(),
            body=raw,
            message_id=str(message_id),
            headers={"x-type": message_type, **sealed_key_headers(sealed_key)},
            timeout=self.settings.confirm_timeout_s,
        )
        self.published_to_peer[peer] = self.published_to_peer.get(peer, 0) + 1

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
