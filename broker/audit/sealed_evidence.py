"""Sealed personal data as evidence (pure): opened with an auditor's key, checked offline.

A personal payload is logged as ciphertext (`broker.core.personal`). Its data key, wrapped with HPKE
for its holders and for the gateway's own auditors (agreement role `auditor`), lives in the erasable
key vault, not in the log. An auditor holding its key-agreement private key unwraps the data key from
the vault's row, decrypts the logged ciphertext and searches the payload.

What goes into a bundle for an opened message (`opened/<message id>.json`) is the data key and the
payload. `check_opened` decrypts the signed, proven ciphertext with that key itself and requires
exactly the payload shown, so the opened text is proved to be the sealed one without trusting the
auditor. The data key is fresh per message: it discloses this message's personal data and nothing
else, which is what an evidence bundle about this worker is for. A message whose vault row was
destroyed (crypto-shredded) cannot be opened by anyone: it is listed with the date of its erasure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from broker.core.canonical import canonical_bytes, strict_loads
from broker.core.envelope import Envelope
from broker.core.errors import ExchangeError, Reason, VerificationError
from broker.core.jws import b64url, b64url_decode
from broker.core.personal import (
    committed_data_key,
    decode_key_header,
    is_sealed,
    open_payload,
    unwrap_with_any,
)

OPENED_DIR = "opened/"
_OPENED_MEMBERS = {"message_id", "data_key", "payload"}

# Why a sealed message was not searched (the bundle's manifest counts them by these words).
NO_KEY_GIVEN = "no auditor key given"
NOT_IN_VAULT = "no data key in the vault"
NOT_FOR_THESE_KEYS = "no wrap opens with the given keys"


def _invalid(diagnostic: str) -> VerificationError:
    return VerificationError(Reason.AUDIT_PROOF_INVALID, f"bundle: {diagnostic}")


def opened_name(message_id: UUID) -> str:
    return f"{OPENED_DIR}{message_id}.json"


@dataclass(frozen=True)
class OpenedPayload:
    """A sealed message's payload opened: the data key and the decrypted canonical JSON."""

    message_id: UUID
    data_key: bytes
    plaintext: bytes

    @property
    def name(self) -> str:
        return opened_name(self.message_id)

    def to_bytes(self) -> bytes:
        return canonical_bytes(
            {
                "message_id": str(self.message_id),
                "data_key": b64url(self.data_key),
                "payload": strict_loads(self.plaintext),
            }
        )


@dataclass(frozen=True)
class Erased:
    message_id: UUID
    erased_at: datetime


@dataclass(frozen=True)
class SealedSearch:
    """What an auditor's keys made of a log's sealed messages: opened, erased, or not searched (why)."""

    opened: tuple[OpenedPayload, ...] = ()
    erased: tuple[Erased, ...] = ()
    not_searched: Mapping[str, int] = field(default_factory=dict)

    @property
    def unsearched(self) -> int:
        return sum(self.not_searched.values())


def sealed_envelope(raw: bytes) -> Envelope | None:
    """The envelope in stored bytes when its payload is sealed; None for anything else.

    Reads without checking the signature: a bundle's entries are verified by their proofs.
    """
    try:
        document = strict_loads(raw)
        if not isinstance(document, dict):
            return None
        document.pop("signature", None)
        envelope = Envelope.model_validate_json(canonical_bytes(document))
    except (ExchangeError, ValueError):
        return None
    return envelope if is_sealed(envelope.payload) else None


def open_sealed(envelope: Envelope, wrapped: str, keys: Sequence[X25519PrivateKey]) -> OpenedPayload | None:
    """The payload opened with whichever of `keys` a wrap in the vault's `wrapped` header opens."""
    commitment = committed_data_key(envelope)
    if commitment is None:
        return None
    try:
        wraps = decode_key_header(wrapped)
        data_key = unwrap_with_any(wraps, keys, message_id=envelope.id, dek_sha256=commitment)
        if data_key is None:
            return None
        plaintext = open_payload(envelope, data_key)
    except VerificationError:
        return None
    return OpenedPayload(message_id=envelope.id, data_key=data_key, plaintext=plaintext)


def search_sealed(
    envelopes: Mapping[UUID, Envelope],
    *,
    wrapped: Mapping[UUID, str],
    erased: Mapping[UUID, datetime],
    keys: Sequence[X25519PrivateKey],
) -> SealedSearch:
    """Open every sealed message the vault rows and `keys` allow; say of each other one why not."""
    opened: list[OpenedPayload] = []
    gone: list[Erased] = []
    why: Counter[str] = Counter()
    for message_id, envelope in envelopes.items():
        if message_id in erased:
            gone.append(Erased(message_id=message_id, erased_at=erased[message_id]))
        elif not keys:
            why[NO_KEY_GIVEN] += 1
        elif message_id not in wrapped:
            why[NOT_IN_VAULT] += 1
        elif (found := open_sealed(envelope, wrapped[message_id], keys)) is not None:
            opened.append(found)
        else:
            why[NOT_FOR_THESE_KEYS] += 1
    return SealedSearch(
        opened=tuple(opened),
        erased=tuple(sorted(gone, key=lambda item: (item.erased_at, str(item.message_id)))),
        not_searched=dict(sorted(why.items())),
    )


def check_opened(raw: bytes, envelope: Envelope) -> OpenedPayload:
    """An `opened/` member against the proven envelope: its key decrypts the signed ciphertext to
    exactly the payload shown."""
    try:
        document = strict_loads(raw)
    except ExchangeError as exc:
        raise _invalid(f"an opened payload is not JSON: {exc.diagnostic}") from None
    if not isinstance(document, dict) or set(document) != _OPENED_MEMBERS or canonical_bytes(document) != raw:
        raise _invalid("an opened payload is canonical JSON of message_id, data_key and payload")
    if document["message_id"] != str(envelope.id):
        raise _invalid(f"the opened payload of {envelope.id} names message {document['message_id']!r}")
    try:
        data_key = b64url_decode(str(document["data_key"]))
        plaintext = open_payload(envelope, data_key)
    except VerificationError as exc:
        raise _invalid(
            f"the data key shown for {envelope.id} does not open its sealed payload: {exc}"
        ) from None
    if canonical_bytes(document["payload"]) != plaintext:
        raise _invalid(f"the payload shown for {envelope.id} is not the one sealed in the signed message")
    return OpenedPayload(message_id=envelope.id, data_key=data_key, plaintext=plaintext)
