"""Seal a payload into signed wire bytes; open received bytes into a verified, validated message.

`open_message` is the receive pipeline of the design, in order: size → strict JSON → canonical form →
signature over the exact bytes → envelope schema → signer chain trusted at created_at → certificate
authority is the sender → agreement policy → payload schema and the agreement's rules. Every failure
is a RemoteError with a reason code; nothing else escapes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast
from uuid import UUID

import pydantic

from broker.core.agreement_set import Agreements
from broker.core.canonical import canonical_bytes, strict_loads
from broker.core.catalogue import Payload, parse_payload, payload_class, payload_to_json
from broker.core.catalogue.trust import TrustUpdate
from broker.core.envelope import Envelope, sha256_hex
from broker.core.errors import PolicyError, Reason, ReplayError, ValidationError, VerificationError
from broker.core.ids import uuid7
from broker.core.jws import sign_detached, verify_detached
from broker.core.personal import is_sealed, open_payload, seal_payload
from broker.core.pki import Signer
from broker.core.trust import SignerIdentity, TrustStore

# Death notifications may carry scanned documents inline; anything larger travels by reference.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class SealedMessage:
    envelope: Envelope
    raw: bytes
    sha256: str


@dataclass(frozen=True)
class OpenedMessage:
    envelope: Envelope
    payload: Payload
    raw: bytes
    sha256: str
    signer: SignerIdentity
    # The data key of a sealed personal payload, kept to re-wrap it for local subscribers.
    data_key: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class VerifiedEnvelope:
    """Everything but the payload checked: what an auditor proves without any decryption key."""

    envelope: Envelope
    raw: bytes
    sha256: str
    signer: SignerIdentity


DataKeySource = Callable[[Envelope], bytes]


@dataclass(frozen=True)
class Peek:
    """Unverified fields read from bytes we are rejecting, to address a negative receipt."""

    message_id: UUID | None
    message_type: str | None
    sender: str | None
    recipient: str | None


def seal(
    payload: Payload,
    *,
    sender: str,
    recipient: str,
    signer: Signer,
    created_at: datetime,
    message_id: UUID | None = None,
    correlation_id: UUID | None = None,
    data_key: bytes | None = None,
) -> SealedMessage:
    """With `data_key` the payload is encrypted under it (personal data, `broker.core.personal`), then signed."""
    message_id = message_id or uuid7()
    body: dict[str, Any] = payload_to_json(payload)
    if data_key is not None:
        body = seal_payload(
            body,
            data_key=data_key,
            message_id=message_id,
            message_type=payload.MESSAGE_TYPE,
            version=payload.VERSION,
            sender=sender,
            recipient=recipient,
        )
    envelope = Envelope(
        id=message_id,
        type=payload.MESSAGE_TYPE,
        version=payload.VERSION,
        sender=sender,
        recipient=recipient,
        created_at=created_at,
        correlation_id=correlation_id,
        payload=cast(dict[str, pydantic.JsonValue], body),
    )
    return seal_envelope(envelope, signer=signer)


def seal_envelope(envelope: Envelope, *, signer: Signer) -> SealedMessage:
    document = envelope.to_json()
    signature = sign_detached(canonical_bytes(document), private_key=signer.private_key, chain=signer.chain)
    raw = canonical_bytes({**document, "signature": signature})
    return SealedMessage(envelope=envelope, raw=raw, sha256=sha256_hex(raw))


def _split_signature(raw: bytes, max_bytes: int) -> tuple[dict[str, Any], str]:
    if len(raw) > max_bytes:
        raise VerificationError(
            Reason.MESSAGE_OVERSIZED, f"{len(raw)} bytes exceeds the limit of {max_bytes}"
        )
    document = strict_loads(raw)
    if not isinstance(document, dict):
        raise VerificationError(Reason.MESSAGE_MALFORMED, "an envelope must be a JSON object")
    signature = document.pop("signature", None)
    if signature is None:
        raise VerificationError(Reason.SIGNATURE_MISSING, "the envelope carries no signature")
    if not isinstance(signature, str):
        raise VerificationError(Reason.SIGNATURE_INVALID, "signature must be a detached compact JWS string")
    # Only the canonical spelling is accepted: it makes the received bytes the signed bytes.
    if canonical_bytes({**document, "signature": signature}) != raw:
        raise VerificationError(Reason.MESSAGE_MALFORMED, "envelope bytes are not RFC 8785 canonical JSON")
    return document, signature


def verify_envelope(
    raw: bytes,
    *,
    trust: TrustStore,
    agreement: Agreements,
    local_country: str | None = None,
    max_bytes: int = MAX_MESSAGE_BYTES,
    received_at: datetime | None = None,
) -> VerifiedEnvelope:
    """Every check of `open_message` but the payload's: signature, chain, sender, agreement policy."""
    document, signature = _split_signature(raw, max_bytes)
    unsigned = canonical_bytes(document)
    verified = verify_detached(signature, unsigned)
    try:
        envelope = Envelope.model_validate_json(unsigned)
    except pydantic.ValidationError as exc:
        raise ValidationError(Reason.SCHEMA_INVALID, f"envelope: {_first_errors(exc)}") from None
    identity = trust.verify_signer(
        verified.chain,
        at=envelope.created_at,
        revocation_at=received_at,
        # A fresh CRL arrives in a trust update: refusing those for a stale CRL would never end.
        stale_crl_ok=envelope.type == TrustUpdate.MESSAGE_TYPE,
    )
    if identity.authority_id != envelope.sender:
        raise VerificationError(
            Reason.CERT_AUTHORITY_MISMATCH,
            f"signed by {identity.authority_id} but the envelope names sender {envelope.sender}",
        )
    try:
        sender = agreement.authority(envelope.sender)
    except PolicyError:
        raise PolicyError(
            Reason.POLICY_SENDER_NOT_ALLOWED, f"{envelope.sender} is not party to agreement {agreement.id}"
        ) from None
    if sender.country != identity.country:
        raise VerificationError(
            Reason.CERT_AUTHORITY_MISMATCH,
            f"{envelope.sender} belongs to {sender.country} but its certificate was issued by {identity.country}",
        )
    # The agreement between the sender's (certified) country and the recipient's, in force on the
    # day the message was made.
    agreement.check_send(
        message_type=envelope.type,
        sender_id=envelope.sender,
        recipient_id=envelope.recipient,
        at=envelope.created_at,
    )
    if local_country is not None and agreement.authority(envelope.recipient).country != local_country:
        raise PolicyError(
            Reason.POLICY_WRONG_RECIPIENT, f"{envelope.recipient} is not an authority of {local_country}"
        )
    return VerifiedEnvelope(envelope=envelope, raw=raw, sha256=sha256_hex(raw), signer=identity)


def open_message(
    raw: bytes,
    *,
    trust: TrustStore,
    agreement: Agreements,
    local_country: str | None = None,
    max_bytes: int = MAX_MESSAGE_BYTES,
    received_at: datetime | None = None,
    data_key_for: DataKeySource | None = None,
    require_sealed: bool = False,
) -> OpenedMessage:
    """Open `raw`; with `received_at` (a live gateway), revocation is judged at arrival, not at created_at.

    A sealed payload is decrypted only after every other check passed, with the key `data_key_for`
    unwraps; `require_sealed` refuses a personal type whose payload arrived in clear.
    """
    verified = verify_envelope(
        raw,
        trust=trust,
        agreement=agreement,
        local_country=local_country,
        max_bytes=max_bytes,
        received_at=received_at,
    )
    return open_verified(verified, data_key_for=data_key_for, require_sealed=require_sealed)


def open_verified(
    verified: VerifiedEnvelope, *, data_key_for: DataKeySource | None = None, require_sealed: bool = False
) -> OpenedMessage:
    """The payload of an envelope `verify_envelope` passed: decrypted (if sealed), schema, rules.

    A gateway runs its freshness and duplicate checks between the two, so no key is looked up for a
    stale or already received copy (its unsigned key header may name anything).
    """
    envelope = verified.envelope
    data_key: bytes | None = None
    if is_sealed(envelope.payload):
        if data_key_for is None:
            raise VerificationError(
                Reason.PAYLOAD_UNDECRYPTABLE, "the payload is sealed and no key was offered"
            )
        data_key = data_key_for(envelope)
        payload_json = open_payload(envelope, data_key)
    else:
        if require_sealed and payload_class(envelope.type, envelope.version).PERSONAL:
            raise PolicyError(
                Reason.PAYLOAD_NOT_SEALED, f"{envelope.type} carries personal data and must be sealed"
            )
        payload_json = canonical_bytes(envelope.payload)
    payload = parse_payload(envelope.type, envelope.version, payload_json)
    return OpenedMessage(
        envelope=envelope,
        payload=payload,
        raw=verified.raw,
        sha256=verified.sha256,
        signer=verified.signer,
        data_key=data_key,
    )


def check_freshness(envelope: Envelope, *, now: datetime, max_age: timedelta, max_skew: timedelta) -> None:
    """`replay.stale` for a created_at older than `max_age` or more than `max_skew` in the future."""
    age = now - envelope.created_at
    if age > max_age:
        raise ReplayError(
            Reason.REPLAY_STALE,
            f"created_at {envelope.created_at.isoformat()} is older than the accepted {max_age}",
        )
    if -age > max_skew:
        raise ReplayError(
            Reason.REPLAY_STALE,
            f"created_at {envelope.created_at.isoformat()} is in the future beyond the allowed clock skew of {max_skew}",
        )


def peek(raw: bytes) -> Peek:
    """Best effort, never raises: fields of a message we could not open, for the negative receipt."""
    try:
        document = strict_loads(raw[:MAX_MESSAGE_BYTES])
    except VerificationError:
        return Peek(None, None, None, None)
    if not isinstance(document, dict):
        return Peek(None, None, None, None)

    def text(key: str) -> str | None:
        value = document.get(key)
        return value[:64] if isinstance(value, str) else None

    try:
        message_id = UUID(str(document.get("id")))
    except ValueError:
        message_id = None
    return Peek(message_id, text("type"), text("sender"), text("recipient"))


def _first_errors(exc: pydantic.ValidationError, limit: int = 3) -> str:
    parts = []
    for error in exc.errors()[:limit]:
        location = ".".join(str(p) for p in error["loc"]) or "(root)"
        parts.append(f"{location}: {error['msg']}")
    return "; ".join(parts)


__all__ = [
    "MAX_MESSAGE_BYTES",
    "DataKeySource",
    "OpenedMessage",
    "Peek",
    "SealedMessage",
    "VerifiedEnvelope",
    "check_freshness",
    "open_message",
    "open_verified",
    "peek",
    "seal",
    "seal_envelope",
    "verify_envelope",
]
