"""Signed checkpoints of an audit log and the peer's countersignature of them (pure: no I/O).

A checkpoint says "the log of `origin` had `tree_size` entries with root `root_hash` at `time`",
signed by the origin gateway's certificate. Its stored form is RFC 8785 JSON with a `signature`
member, exactly like an envelope: a detached JWS over the canonical JSON of the other members. In a
receipt the same signature travels as an ordinary (attached) compact JWS, so the receipt's
`checkpoint.signature` is self-contained and any JOSE library can read it.

A witness record is the peer gateway countersigning a checkpoint it received: once both countries
hold it, a log rewritten later under the same key no longer matches what the other side witnessed.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from broker.audit.entry import format_time
from broker.audit.merkle import HASH_SIZE
from broker.core.canonical import canonical_bytes, strict_loads
from broker.core.catalogue.receipt import Checkpoint
from broker.core.catalogue.witness import CheckpointWitness
from broker.core.errors import Reason, VerificationError
from broker.core.jws import b64url, b64url_decode, sign_detached, verify_detached
from broker.core.pki import Signer
from broker.core.trust import SignerIdentity, TrustStore

CHECKPOINT_FORMAT = "labour-exchange-checkpoint/1"
WITNESS_FORMAT = "labour-exchange-witness/1"


def _malformed(what: str, detail: str) -> VerificationError:
    return VerificationError(Reason.AUDIT_CHECKPOINT_INVALID, f"{what}: {detail}")


def parse_hash(text: object, *, what: str) -> bytes:
    """A SHA-256 in lower-case hex, refusing every other spelling of the same bytes."""
    if not isinstance(text, str) or len(text) != 2 * HASH_SIZE:
        raise _malformed(what, "not a 64-character hex SHA-256")
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise _malformed(what, "not hex") from None
    if value.hex() != text:
        raise _malformed(what, "hex must be lower-case")
    return value


def parse_time(text: object, *, what: str) -> datetime:
    if not isinstance(text, str):
        raise _malformed(what, "time is not a string")
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise _malformed(what, f"time {text!r} is not RFC 3339") from None
    if value.utcoffset() is None or format_time(value) != text:
        raise _malformed(what, f"time {text!r} is not in the form 2026-01-31T12:00:00.000000Z")
    return value


def _signed_document(raw: bytes, *, what: str) -> tuple[dict[str, Any], str]:
    """Split canonical JSON with a `signature` member into the signed members and the JWS."""
    try:
        document = strict_loads(raw)
    except VerificationError as exc:
        raise _malformed(what, exc.diagnostic) from None
    if not isinstance(document, dict):
        raise _malformed(what, "not a JSON object")
    signature = document.pop("signature", None)
    if not isinstance(signature, str):
        raise _malformed(what, "no signature")
    if canonical_bytes({**document, "signature": signature}) != raw:
        raise _malformed(what, "not RFC 8785 canonical JSON")
    return document, signature


def _check_members(document: dict[str, Any], expected: set[str], *, what: str) -> None:
    if set(document) != expected:
        raise _malformed(what, f"members {sorted(document)} instead of {sorted(expected)}")


@dataclass(frozen=True, kw_only=True)
class CheckpointBody:
    """What a checkpoint signs."""

    origin: str
    tree_size: int
    root_hash: bytes
    time: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "origin": self.origin,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash.hex(),
            "time": format_time(self.time),
        }

    def signing_bytes(self) -> bytes:
        return canonical_bytes(self.to_json())

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> CheckpointBody:
        what = "checkpoint"
        _check_members(document, {"format", "origin", "tree_size", "root_hash", "time"}, what=what)
        if document["format"] != CHECKPOINT_FORMAT:
            raise _malformed(what, f"format {document['format']!r} is not {CHECKPOINT_FORMAT}")
        origin, tree_size = document["origin"], document["tree_size"]
        if not isinstance(origin, str) or not origin:
            raise _malformed(what, "origin is not a gateway id")
        if not isinstance(tree_size, int) or isinstance(tree_size, bool) or tree_size < 0:
            raise _malformed(what, "tree_size is not a count")
        return cls(
            origin=origin,
            tree_size=tree_size,
            root_hash=parse_hash(document["root_hash"], what=what),
            time=parse_time(document["time"], what=what),
        )


@dataclass(frozen=True, kw_only=True)
class SignedCheckpoint:
    body: CheckpointBody
    signature: str  # detached JWS over body.signing_bytes()

    def to_bytes(self) -> bytes:
        """The stored form: canonical JSON, the bytes of a CHECKPOINT entry and of a checkpoint file."""
        return canonical_bytes({**self.body.to_json(), "signature": self.signature})

    @classmethod
    def from_bytes(cls, raw: bytes) -> SignedCheckpoint:
        document, signature = _signed_document(raw, what="checkpoint")
        return cls(body=CheckpointBody.from_json(document), signature=signature)

    def compact(self) -> str:
        """The same signature as an attached compact JWS (RFC 7515 section 7.1)."""
        protected, _, signature = self.signature.split(".")
        return f"{protected}.{b64url(self.body.signing_bytes())}.{signature}"

    @classmethod
    def from_compact(cls, text: str) -> SignedCheckpoint:
        parts = text.split(".")
        if len(parts) != 3 or not parts[1]:
            raise _malformed("checkpoint", "not an attached compact JWS")
        try:
            payload = b64url_decode(parts[1])
        except VerificationError:
            raise _malformed("checkpoint", "payload is not base64url") from None
        try:
            document = strict_loads(payload)
        except VerificationError as exc:
            raise _malformed("checkpoint", exc.diagnostic) from None
        if not isinstance(document, dict):
            raise _malformed("checkpoint", "payload is not a JSON object")
        body = CheckpointBody.from_json(document)
        if body.signing_bytes() != payload:
            raise _malformed("checkpoint", "payload is not RFC 8785 canonical JSON")
        return cls(body=body, signature=f"{parts[0]}..{parts[2]}")

    def for_receipt(self) -> Checkpoint:
        return Checkpoint(
            tree_size=self.body.tree_size, root_hash=self.body.root_hash.hex(), signature=self.compact()
        )

    @classmethod
    def from_receipt(cls, checkpoint: Checkpoint) -> SignedCheckpoint:
        """The signed checkpoint a receipt carries; its plain fields must agree with what was signed."""
        if checkpoint.signature is None:
            raise VerificationError(Reason.SIGNATURE_MISSING, "the receipt's checkpoint is not signed")
        signed = cls.from_compact(checkpoint.signature)
        if (
            signed.body.tree_size != checkpoint.tree_size
            or signed.body.root_hash.hex() != checkpoint.root_hash
        ):
            raise _malformed("checkpoint", "the receipt's tree_size or root_hash differ from the signed ones")
        return signed

    def same_tree(self, other: SignedCheckpoint) -> bool:
        return (
            self.body.origin == other.body.origin
            and self.body.tree_size == other.body.tree_size
            and hmac.compare_digest(self.body.root_hash, other.body.root_hash)
        )


def sign_checkpoint(body: CheckpointBody, *, signer: Signer) -> SignedCheckpoint:
    if signer.authority_id != body.origin:
        raise ValueError(f"{signer.authority_id} cannot sign a checkpoint of {body.origin}'s log")
    signature = sign_detached(body.signing_bytes(), private_key=signer.private_key, chain=signer.chain)
    return SignedCheckpoint(body=body, signature=signature)


def _verify_signed(
    signature: str, payload: bytes, *, trust: TrustStore, at: datetime, signer_id: str
) -> SignerIdentity:
    verified = verify_detached(signature, payload)
    identity = trust.verify_signer(verified.chain, at=at)
    if identity.authority_id != signer_id:
        raise VerificationError(
            Reason.CERT_AUTHORITY_MISMATCH,
            f"signed by {identity.authority_id} but it names {signer_id}",
        )
    return identity


def verify_checkpoint(
    signed: SignedCheckpoint, *, trust: TrustStore, origin: str | None = None
) -> SignerIdentity:
    """The checkpoint's signature, its signer trusted at the checkpoint time and named as its origin."""
    if origin is not None and signed.body.origin != origin:
        raise VerificationError(
            Reason.AUDIT_CHECKPOINT_INVALID,
            f"checkpoint of {signed.body.origin}'s log where one of {origin}'s was expected",
        )
    return _verify_signed(
        signed.signature,
        signed.body.signing_bytes(),
        trust=trust,
        at=signed.body.time,
        signer_id=signed.body.origin,
    )


@dataclass(frozen=True, kw_only=True)
class WitnessRecord:
    """A peer checkpoint countersigned by `witness` at `time`: the body of a WITNESS entry."""

    checkpoint: SignedCheckpoint
    witness: str
    time: datetime
    signature: str  # detached JWS over the canonical JSON of the other members

    @staticmethod
    def _signed_members(checkpoint: SignedCheckpoint, witness: str, time: datetime) -> dict[str, Any]:
        return {
            "format": WITNESS_FORMAT,
            "checkpoint": checkpoint.compact(),
            "witness": witness,
            "time": format_time(time),
        }

    def signing_bytes(self) -> bytes:
        return canonical_bytes(self._signed_members(self.checkpoint, self.witness, self.time))

    def to_bytes(self) -> bytes:
        members = self._signed_members(self.checkpoint, self.witness, self.time)
        return canonical_bytes({**members, "signature": self.signature})

    @classmethod
    def from_bytes(cls, raw: bytes) -> WitnessRecord:
        what = "witness record"
        document, signature = _signed_document(raw, what=what)
        _check_members(document, {"format", "checkpoint", "witness", "time"}, what=what)
        if document["format"] != WITNESS_FORMAT:
            raise _malformed(what, f"format {document['format']!r} is not {WITNESS_FORMAT}")
        if not isinstance(document["checkpoint"], str) or not isinstance(document["witness"], str):
            raise _malformed(what, "checkpoint and witness must be strings")
        return cls(
            checkpoint=SignedCheckpoint.from_compact(document["checkpoint"]),
            witness=document["witness"],
            time=parse_time(document["time"], what=what),
            signature=signature,
        )

    def to_payload(self) -> CheckpointWitness:
        """The `checkpoint.witness` payload that hands this record to the checkpoint's origin."""
        members = self._signed_members(self.checkpoint, self.witness, self.time)
        return CheckpointWitness.model_validate({**members, "signature": self.signature})

    @classmethod
    def from_payload(cls, payload: CheckpointWitness) -> WitnessRecord:
        """The record a `checkpoint.witness` message carries: its JSON is the stored form itself."""
        return cls.from_bytes(canonical_bytes(payload.model_dump(mode="json")))


def cosign(checkpoint: SignedCheckpoint, *, signer: Signer, time: datetime) -> WitnessRecord:
    """Our countersignature of a peer's checkpoint (verify it first: we vouch for what we sign)."""
    members = WitnessRecord._signed_members(checkpoint, signer.authority_id, time)
    signature = sign_detached(canonical_bytes(members), private_key=signer.private_key, chain=signer.chain)
    return WitnessRecord(checkpoint=checkpoint, witness=signer.authority_id, time=time, signature=signature)


def verify_witness(record: WitnessRecord, *, trust: TrustStore) -> None:
    """Both signatures: the origin's over its checkpoint and the witness's over the record."""
    verify_checkpoint(record.checkpoint, trust=trust)
    _verify_signed(
        record.signature, record.signing_bytes(), trust=trust, at=record.time, signer_id=record.witness
    )


def hash_matches(expected: bytes, actual: bytes) -> bool:
    return len(expected) == len(actual) and hmac.compare_digest(expected, actual)


__all__ = [
    "CHECKPOINT_FORMAT",
    "WITNESS_FORMAT",
    "CheckpointBody",
    "SignedCheckpoint",
    "WitnessRecord",
    "cosign",
    "hash_matches",
    "parse_hash",
    "parse_time",
    "sign_checkpoint",
    "verify_checkpoint",
    "verify_witness",
]
