"""What became of a message, read from the gateway's own records: outbox, audit log, key vault.

Read-only, from the API's process: the outbox and key vault through `mode=ro` SQLite, the audit
log through a read-only log source (one consistent snapshot per request). Every read is checked
against the caller: a sent message is the sender's, a received one its recipient's or a local
subscriber's the agreement lets receive its type.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import cast
from uuid import UUID

from pydantic import JsonValue

from broker.api.models import (
    MessageStatus,
    PayloadState,
    ProofKind,
    ReceiptView,
    ReceivedMessage,
    ReceivedPage,
    TrailEntry,
)
from broker.api.problems import ApiProblem
from broker.audit.entry import AuditEntry, EntryKind
from broker.audit.proofs import check_inclusion
from broker.audit.receipt_refs import is_ref, parse_ref
from broker.audit.stores.proving import entries_of, prove_message
from broker.audit.stores.source import LogSource, open_source
from broker.core.agreement_set import Agreements
from broker.core.catalogue import payload_to_json
from broker.core.envelope import Envelope, sha256_hex
from broker.core.errors import AuditError, ConfigError, ExchangeError, PolicyError, Reason, VerificationError
from broker.core.personal import committed_data_key, decode_key_header
from broker.core.sealing import open_message, peek
from broker.core.trust import TrustStore
from broker.exchange.personal_keys import ReloadingDecryptor
from broker.state.key_vault import VAULT_FILE, VaultRows, read_vault
from broker.state.keystore import KeyStore
from broker.state.outbox import OutboxReader, OutboxRecord
from broker.state.settings import ExchangeSettings

# Rows of the log read for one page of received messages at most; the cursor goes on from there.
MAX_SCANNED_PER_PAGE = 5000
# Trust anchors and CRLs are read again this often (a key store changes while the API runs).
TRUST_RELOAD_S = 60.0


class Records:
    def __init__(
        self, settings: ExchangeSettings, *, agreement: Agreements, keystore: KeyStore, outbox: OutboxReader
    ) -> None:
        self._settings = settings
        self._agreement = agreement
        self._keystore = keystore
        self._outbox = outbox
        self._decryptors: dict[str, ReloadingDecryptor] = {}
        self._trust: tuple[float, TrustStore] | None = None

    @property
    def outbox(self) -> OutboxReader:
        return self._outbox

    @contextlib.asynccontextmanager
    async def log(self) -> AsyncIterator[LogSource]:
        settings = self._settings
        if settings.audit_backend == "postgres" and settings.audit_dsn:
            source = await open_source(
                settings.audit_dsn,
                schema=f"audit_{settings.country.lower()}",
                plaintext_hosts=settings.plaintext_hosts,
            )
        else:
            path = settings.country_state_dir / "audit.sqlite"
            if not path.is_file():
                raise ApiProblem(503, Reason.AUDIT_UNAVAILABLE, "the gateway has no audit log yet: start it")
            source = await open_source(str(path))
        try:
            yield source
        finally:
            await source.close()

    # -- sent messages ---------------------------------------------------------------------------
    async def sent(self, authority: str, message_id: UUID) -> tuple[OutboxRecord, str]:
        """The outbox record of a message `authority` sent, and its sender; 404 or 403 otherwise."""
        record = await self._outbox.get(message_id)
        if record is None:
            raise ApiProblem(404, Reason.API_NOT_FOUND, f"no message {message_id} was sent by this gateway")
        sender = peek(record.raw).sender or ""
        if sender != authority:
            raise ApiProblem(
                403,
                Reason.AUTH_FORBIDDEN,
                f"message {message_id} was sent by {sender}; {authority} may read only its own messages",
            )
        return record, sender

    async def status(self, authority: str, message_id: UUID) -> MessageStatus:
        record, sender = await self.sent(authority, message_id)
        async with self.log() as source:
            entries = await entries_of(source, message_id=message_id)
        return MessageStatus(
            message_id=record.message_id,
            type=record.message_type,
            sender=sender,
            to=record.recipient,
            state=record.state,
            reason=record.reason,
            attempts=record.attempts,
            sent_at=record.sent_at,
            deadline=record.deadline,
            receipt_at=record.receipt_at,
            trail=[
                TrailEntry(
                    index=e.index,
                    time=e.time,
                    kind=str(e.kind),
                    type=e.message_type,
                    peer=e.peer,
                    verdict=e.verdict,
                    reason=e.reason,
                )
                for e in entries
            ],
        )

    async def receipt(self, authority: str, message_id: UUID) -> ReceiptView:
        await self.sent(authority, message_id)
        async with self.log() as source:
            entries = await entries_of(source, kind=EntryKind.RECEIPT_RECEIVED, message_id=message_id)
            if not entries:
                raise ApiProblem(
                    404,
                    Reason.RECEIPT_PENDING,
                    f"no receipt for {message_id} yet; wait for it with GET /v1/messages/{message_id}?wait=30",
                    headers={"Retry-After": "1"},
                )
            entry = entries[-1]  # the last one decides (an accepted copy after a retryable rejection)
            signed: bytes | None = entry.envelope or None
            receipt_id = peek(entry.envelope).message_id if signed else None
            if signed is not None and is_ref(signed):
                receipt_id = parse_ref(signed).receipt_id
                holding = await entries_of(source, kind=EntryKind.RECEIPT_RECEIVED, message_id=receipt_id)
                signed = holding[0].envelope if holding and holding[0].envelope else None
        return ReceiptView(
            message_id=message_id,
            verdict=entry.verdict or "",
            reason=entry.reason,
            received_at=entry.time,
            audit_index=entry.index,
            receipt_id=receipt_id,
            receipt_sha256=sha256_hex(signed) if signed else None,
            receipt=base64.b64encode(signed).decode("ascii") if signed else None,
        )

    # -- proofs ----------------------------------------------------------------------------------
    async def proof(self, authority: str, message_id: UUID, kind: ProofKind) -> bytes:
        """The inclusion proof file `broker audit check-proof` reads, checked before it is handed out."""
        if kind is ProofKind.RECEIVED:
            async with self.log() as source:
                received = await entries_of(source, kind=EntryKind.RECEIVED, message_id=message_id)
            if not received:
                raise ApiProblem(404, Reason.API_NOT_FOUND, f"no message {message_id} was received here")
            self._check_entitled(authority, received[0])
        else:
            await self.sent(authority, message_id)
        return await self.prove(message_id, kind)

    async def prove(self, message_id: UUID, kind: ProofKind) -> bytes:
        """The proof of `kind` about `message_id`, for whoever may have it (checked by the caller)."""
        async with self.log() as source:
            try:
                proof = await prove_message(source, message_id, EntryKind(str(kind)))
            except ExchangeError as error:
                if error.reason is Reason.AUDIT_NOT_COVERED:
                    raise ApiProblem(
                        404,
                        error.reason,
                        f"the entry is newer than the gateway's last signed checkpoint (every "
                        f"{self._settings.checkpoint_every_s:g} s at most); ask again then",
                        headers={"Retry-After": str(max(1, round(self._settings.checkpoint_every_s)))},
                    ) from None
                if error.reason is Reason.AUDIT_OUT_OF_RANGE:
                    raise ApiProblem(404, error.reason, error.diagnostic) from None
                raise
        check_inclusion(proof, trust=self._trust_store())  # never hand out a proof that does not check
        return proof.to_bytes()

    # -- received messages -----------------------------------------------------------------------
    async def received(self, authority: str, *, cursor: int, limit: int) -> ReceivedPage:
        entries: list[AuditEntry] = []
        position = cursor
        async with self.log() as source:
            async for row in source.rows(cursor):
                position = row.index + 1
                if (
                    isinstance(row, AuditEntry)
                    and row.kind is EntryKind.RECEIVED
                    and self._entitled(authority, row)
                ):
                    entries.append(row)
                    if len(entries) >= limit:
                        break
                if position - cursor >= MAX_SCANNED_PER_PAGE:
                    break
        vault = await self._vault_rows([e.message_id for e in entries if e.message_id is not None])
        return ReceivedPage(items=[self._received_item(e, vault) for e in entries], next_cursor=position)

    async def open_received(self, entries: list[AuditEntry]) -> list[ReceivedMessage]:
        """Received entries opened as `received` lists them (the console's alerts), without a caller check."""
        vault = await self._vault_rows([e.message_id for e in entries if e.message_id is not None])
        return [self._received_item(e, vault) for e in entries]

    async def _vault_rows(self, message_ids: list[UUID]) -> VaultRows:
        """The wrapped data keys (and erasures) of a page's messages, in one read-only look."""
        path = self._settings.country_state_dir / VAULT_FILE
        if not message_ids or not path.is_file():
            return VaultRows()
        try:
            return await asyncio.to_thread(read_vault, path, message_ids)
        except ConfigError as error:  # the gateway's own vault: unreadable is our side's outage
            raise AuditError(Reason.AUDIT_UNAVAILABLE, error.diagnostic) from None

    def _entitled(self, authority: str, entry: AuditEntry) -> bool:
        try:
            self._check_entitled(authority, entry)
        except ApiProblem:
            return False
        return True

    def _check_entitled(self, authority: str, entry: AuditEntry) -> None:
        """The recipient, or a local subscriber the agreement lets receive the type; else 403."""
        recipient = peek(entry.envelope).recipient
        if recipient == authority:
            return
        try:
            self._agreement.check_subscriber(
                subscriber_id=authority, message_type=entry.message_type or "", country=self._settings.country
            )
        except PolicyError:
            raise ApiProblem(
                403,
                Reason.AUTH_FORBIDDEN,
                f"{authority} is neither the recipient of message {entry.message_id} nor entitled to its type",
            ) from None

    def _received_item(self, entry: AuditEntry, vault: VaultRows) -> ReceivedMessage:
        raw = entry.envelope
        seen = peek(raw)
        header = vault.wrapped.get(entry.message_id) if entry.message_id else None

        def data_key(envelope: Envelope) -> bytes:
            if header is None:
                raise VerificationError(Reason.PAYLOAD_UNDECRYPTABLE, "the data key was erased")
            return self._decryptor(envelope.recipient).unwrap(
                decode_key_header(header), message_id=envelope.id, dek_sha256=committed_data_key(envelope)
            )

        state: PayloadState = "open"
        payload = None
        reason = None
        version: int | None = None
        created_at: datetime | None = None
        try:
            opened = open_message(
                raw,
                trust=self._trust_store(),
                agreement=self._agreement,
                local_country=self._settings.country,
                max_bytes=self._settings.max_message_bytes,
                data_key_for=data_key,
            )
            payload = cast(dict[str, JsonValue], payload_to_json(opened.payload))
            envelope = opened.envelope
            version, created_at = envelope.version, envelope.created_at
        except ExchangeError as error:
            erased = entry.message_id in vault.erased
            state = "erased" if erased and error.reason is Reason.PAYLOAD_UNDECRYPTABLE else "unreadable"
            reason = str(error.reason)
        return ReceivedMessage(
            message_id=entry.message_id or seen.message_id or UUID(int=0),
            type=entry.message_type or seen.message_type or "",
            version=version,
            sender=seen.sender or entry.peer or "",
            recipient=seen.recipient or "",
            created_at=created_at,
            received_at=entry.time,
            audit_index=entry.index,
            sha256=sha256_hex(raw),
            payload_state=state,
            payload=payload,
            reason=reason,
        )

    def _decryptor(self, authority: str) -> ReloadingDecryptor:
        if authority not in self._decryptors:
            self._decryptors[authority] = ReloadingDecryptor(self._keystore, authority)
        return self._decryptors[authority]

    def _trust_store(self) -> TrustStore:
        now = time.monotonic()
        if self._trust is None or now - self._trust[0] > TRUST_RELOAD_S:
            self._trust = (now, self._keystore.trust_store(self._agreement.countries))
        return self._trust[1]
