"""Local subscribers (consulates, ministry systems): a durable queue each, alerts verified on arrival.

The queue is declared once and outlives the subscriber process, so nothing is missed while it is
offline. Each alert is the original signed envelope, verified again here: a subscriber trusts the
signature of the sending ministry, not the path the bytes took.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import structlog

from broker.core.agreement_set import Agreements
from broker.core.catalogue import Payload, citizenship_of, payload_to_json
from broker.core.catalogue.death import WorkerDeath
from broker.core.catalogue.labels import describe, language_for_peer
from broker.core.catalogue.wording import in_words
from broker.core.catalogue.work_permit import WorkPermitCancellation
from broker.core.envelope import Envelope
from broker.core.errors import LocalError, Reason, RemoteError, VerificationError
from broker.core.personal import SEALED_KEY_HEADER, committed_data_key, decode_key_header
from broker.core.sealing import open_message
from broker.core.trust import TrustStore
from broker.exchange.personal_keys import KeyUnwrapper
from broker.exchange.topology import subscriber_queue
from broker.exchange.transport_api import (
    NO_HEADERS,
    ConsumerHandle,
    Disposition,
    HeaderValue,
    IncomingMessage,
    Transport,
)
from broker.state.private_files import prepare_database

log = structlog.get_logger("broker.exchange.subscriber")


@dataclass(frozen=True)
class Alert:
    message_id: UUID
    message_type: str
    sender: str
    recipient: str
    created_at: datetime
    citizenship: str | None
    payload: Payload
    raw: bytes

    def headline(self, language: str | None = None) -> str:
        """One readable line for a consul: coded values in words, the deadlines that matter.

        A legislation change or labour-market report is worded in `language`, by default the
        sender's country's (Uzbek for Uzbekistan's, `labels.PEER_LANGUAGES`), else English.
        """
        payload = self.payload
        described = describe(
            payload,
            sender=self.sender,
            language=language or language_for_peer(self.sender.partition("-")[0]),
        )
        if described is not None:
            return described
        if isinstance(payload, WorkPermitCancellation):
            worker = payload.worker
            ground = in_words("reason", payload.reason) + (
                f": {payload.reason_text}" if payload.reason_text else ""
            )
            return (
                f"Work permit {payload.permit.number} of {worker.surname_latin} {worker.given_names_latin} "
                f"({worker.citizenship}) cancelled on {payload.decision_date}, ground: {ground}; "
                f"must leave by {payload.departure_deadline} (Art. 14)"
            )
        if isinstance(payload, WorkerDeath):
            worker = payload.worker
            return (
                f"Death of {worker.surname_latin} {worker.given_names_latin} ({worker.citizenship}, "
                f"{worker.identity_document.number}) on {payload.date_of_death}; "
                f"{in_words('category', payload.category)}; repatriation of the body and belongings by "
                f"{in_words('responsible_party', payload.responsible_party)}"
                + ("; work-related, compensation due (Art. 15.4)" if payload.work_related else "")
            )
        return f"{self.message_type} from {self.sender}"

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "message_id": str(self.message_id),
            "type": self.message_type,
            "sender": self.sender,
            "recipient": self.recipient,
            "created_at": self.created_at.isoformat(),
            "citizenship": self.citizenship,
            "payload": payload_to_json(self.payload),
        }
        if isinstance(self.payload, WorkPermitCancellation):
            body["departure_deadline"] = date.isoformat(self.payload.departure_deadline)
        return body


AlertHandler = Callable[[Alert], Awaitable[None]]


class HandledLedger:
    """Ids of the alerts a subscriber has handled, on disk.

    A subscriber that crashes after its handler ran but before the ack gets the alert again from
    the broker; the ledger makes sure the consul is not shown it twice. Calls are synchronous on
    purpose: one small fsync per alert, and no thread can outlive `close()`.
    """

    def __init__(self, path: Path) -> None:
        prepare_database(path)  # 0600 in 0700 before SQLite creates it
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS handled (message_id TEXT PRIMARY KEY, at TEXT NOT NULL)")

    def contains(self, message_id: UUID) -> bool:
        query = "SELECT 1 FROM handled WHERE message_id = ?"
        return self._db.execute(query, (str(message_id),)).fetchone() is not None

    def record(self, message_id: UUID) -> None:
        now = datetime.now(UTC).isoformat()
        self._db.execute("INSERT OR IGNORE INTO handled VALUES (?, ?)", (str(message_id), now))

    def close(self) -> None:
        self._db.close()


class Subscription:
    """A subscriber's durable queue on its own country's broker."""

    def __init__(
        self,
        *,
        transport: Transport,
        agreement: Agreements,
        trust: TrustStore,
        authority_id: str,
        types: Sequence[str],
        citizenship: str | None = None,
        decryptor: KeyUnwrapper | None = None,
        ledger: HandledLedger | None = None,
    ) -> None:
        if not types:
            raise LocalError(Reason.POLICY_SUBSCRIBER_NOT_ALLOWED, "subscribe to at least one message type")
        self._transport = transport
        self._agreement = agreement
        self._trust = trust
        self.authority_id = authority_id
        self.country = agreement.authority(authority_id).country
        self.types = tuple(types)
        self.citizenship = citizenship
        self.queue = subscriber_queue(authority_id)
        self._seen: set[UUID] = set()
        self._ledger = ledger
        # This subscriber's key-agreement keys: personal payloads open only with the key wrapped for it.
        self._decryptor = decryptor
        self._log = log.bind(subscriber=authority_id)

    def binding_keys(self) -> list[str]:
        for message_type in self.types:
            self._agreement.check_subscriber(
                subscriber_id=self.authority_id, message_type=message_type, country=self.country
            )
        return [f"{t}.{self.citizenship or '*'}" for t in self.types]

    async def declare(self) -> str:
        """Create (or keep) the durable queue; raises PolicyError for a type the role may not receive."""
        return await self._transport.declare_subscriber_queue(self.authority_id, self.binding_keys())

    def open(self, raw: bytes, headers: Mapping[str, HeaderValue] = NO_HEADERS) -> Alert:
        decryptor = self._decryptor

        def data_key(envelope: Envelope) -> bytes:
            if decryptor is None:
                raise VerificationError(
                    Reason.PAYLOAD_UNDECRYPTABLE, f"{self.authority_id} holds no decryption key"
                )
            return decryptor.unwrap(
                decode_key_header(headers.get(SEALED_KEY_HEADER)),
                message_id=envelope.id,
                dek_sha256=committed_data_key(envelope),
            )

        opened = open_message(
            raw,
            trust=self._trust,
            agreement=self._agreement,
            local_country=self.country,
            data_key_for=data_key,
        )
        envelope = opened.envelope
        return Alert(
            message_id=envelope.id,
            message_type=envelope.type,
            sender=envelope.sender,
            recipient=envelope.recipient,
            created_at=envelope.created_at,
            citizenship=citizenship_of(opened.payload),
            payload=opened.payload,
            raw=raw,
        )

    async def run(self, handler: AlertHandler, *, prefetch: int = 16) -> ConsumerHandle:
        """Consume alerts; each is acked only after `handler` returned."""

        async def on_message(incoming: IncomingMessage) -> Disposition:
            try:
                alert = self.open(incoming.body, incoming.headers)
            except RemoteError as error:
                # The gateway verified it already; failing here means tampering inside our own broker.
                self._log.error(
                    "alert.unverifiable", message_id=incoming.message_id, reason=str(error.reason)
                )
                return Disposition.REJECT
            if await self._handled_before(alert.message_id):
                self._log.info("alert.duplicate", message_id=str(alert.message_id), type=alert.message_type)
                return Disposition.ACK
            await handler(alert)
            self._seen.add(alert.message_id)
            if self._ledger is not None:
                self._ledger.record(alert.message_id)
            return Disposition.ACK

        return await self._transport.consume(self.queue, on_message, prefetch=prefetch)

    async def _handled_before(self, message_id: UUID) -> bool:
        if message_id in self._seen:
            return True
        return self._ledger is not None and self._ledger.contains(message_id)

    async def collect(self, count: int, *, timeout_s: float) -> list[Alert]:
        """Receive `count` alerts (or fewer if `timeout_s` passes): a convenience for scripts and tests."""
        alerts: list[Alert] = []
        done = asyncio.Event()

        async def keep(alert: Alert) -> None:
            alerts.append(alert)
            if len(alerts) >= count:
                done.set()

        handle = await self.run(keep)
        try:
            async with asyncio.timeout(timeout_s):
                await done.wait()
        except TimeoutError:
            pass
        finally:
            await handle.cancel()
        return alerts
