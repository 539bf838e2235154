"""Stored envelope bytes, checked as an auditor checks them: signature and signer at the message time."""

from __future__ import annotations

from typing import Any

from broker.audit.entry import EntryKind
from broker.core.canonical import canonical_bytes, strict_loads
from broker.core.envelope import Envelope
from broker.core.errors import Reason, VerificationError
from broker.core.jws import verify_detached
from broker.core.trust import SignerIdentity, TrustStore

SIGNED_KINDS = frozenset(
    {EntryKind.SENT, EntryKind.RECEIVED, EntryKind.RECEIPT_SENT, EntryKind.RECEIPT_RECEIVED}
)


def verify_envelope(raw: bytes, *, trust: TrustStore) -> tuple[Envelope, SignerIdentity]:
    """Signature and signer trust of stored envelope bytes, at the envelope's own created_at.

    Policy is not re-checked: the agreement may have changed since; what counts here is who signed.
    """
    document = strict_loads(raw)
    if not isinstance(document, dict):
        raise VerificationError(Reason.MESSAGE_MALFORMED, "the stored envelope is not a JSON object")
    signature = document.pop("signature", None)
    if not isinstance(signature, str):
        raise VerificationError(Reason.SIGNATURE_MISSING, "the stored envelope carries no signature")
    if canonical_bytes({**document, "signature": signature}) != raw:
        raise VerificationError(Reason.MESSAGE_MALFORMED, "the stored envelope is not canonical JSON")
    unsigned = canonical_bytes(document)
    verified = verify_detached(signature, unsigned)
    try:
        envelope = Envelope.model_validate_json(unsigned)
    except ValueError as exc:
        raise VerificationError(Reason.SCHEMA_INVALID, f"the stored envelope: {exc}") from None
    identity = trust.verify_signer(verified.chain, at=envelope.created_at)
    if identity.authority_id != envelope.sender:
        raise VerificationError(
            Reason.CERT_AUTHORITY_MISMATCH,
            f"signed by {identity.authority_id} but the envelope names sender {envelope.sender}",
        )
    return envelope, identity


def expected_peer(kind: EntryKind, envelope: Envelope) -> str:
    return envelope.recipient if kind in (EntryKind.SENT, EntryKind.RECEIPT_SENT) else envelope.sender


def subject_id(kind: EntryKind, envelope: Envelope) -> str:
    """The message an entry is about: the envelope itself, or for a single receipt the message it
    answers (a batched receipt is about many: its entry names the receipt's own id,
    `broker.audit.receipt_refs`)."""
    if kind in (EntryKind.RECEIPT_SENT, EntryKind.RECEIPT_RECEIVED) and envelope.type != "receipt.batch":
        about: Any = envelope.payload.get("message_id")
        return str(about)
    return str(envelope.id)
