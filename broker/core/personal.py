"""Personal data sealed for its recipient: a data key per message, wrapped with HPKE outside the signature.

For a personal type the signed envelope's payload is `{"sealed": {...}}`: the payload's canonical JSON
encrypted with ChaCha20-Poly1305 under a fresh 256-bit data key (DEK). The associated data names the
envelope (id, type, version, sender, recipient), so a ciphertext cannot be moved into another
envelope; `dek_sha256` commits to the key, because ChaCha20-Poly1305 alone is not key-committing.

The DEK travels *outside* the signed bytes, wrapped with HPKE (RFC 9180: X25519, HKDF-SHA256,
ChaCha20-Poly1305) to each holder's key-agreement certificate, in the `x-sealed-key` header. So the
audit log keeps only ciphertext, and destroying a message's wrapped keys erases its personal data
while every signature and every Merkle hash still verifies. See docs/personal-data.md.

Pure: no I/O; randomness comes from the OS through `secrets` and cryptography.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from broker.core.canonical import canonical_bytes, strict_loads
from broker.core.envelope import Envelope
from broker.core.errors import ConfigError, Reason, VerificationError
from broker.core.jws import b64url, b64url_decode
from broker.core.pki import certificate_thumbprint, common_name_of

SEALED_KEY_HEADER = "x-sealed-key"
SEALED_MEMBER = "sealed"
CIPHER = "C20P"  # ChaCha20-Poly1305 (RFC 8439), named as in JWE
HPKE_SUITE_NAME = "X25519-HKDF-SHA256-CHACHA20POLY1305"
DATA_KEY_BYTES = 32
_NONCE_BYTES = 12
_WRAP_VERSION = 1
_MAX_WRAPS = 16  # the recipient, the sender and the permitted subscribers of one country
_MAX_HEADER_CHARS = 8192
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)


def undecryptable(diagnostic: str) -> VerificationError:
    return VerificationError(Reason.PAYLOAD_UNDECRYPTABLE, diagnostic)


def new_data_key() -> bytes:
    return secrets.token_bytes(DATA_KEY_BYTES)


def data_key_commitment(data_key: bytes) -> str:
    return hashlib.sha256(data_key).hexdigest()


def is_sealed(payload: Mapping[str, Any]) -> bool:
    return set(payload) == {SEALED_MEMBER}


def associated_data(
    *, message_id: UUID, message_type: str, version: int, sender: str, recipient: str
) -> bytes:
    """What binds a ciphertext to its envelope: canonical JSON of the envelope's routing fields."""
    return canonical_bytes(
        {
            "id": str(message_id),
            "type": message_type,
            "version": version,
            "sender": sender,
            "recipient": recipient,
        }
    )


def seal_payload(
    payload_json: Mapping[str, Any],
    *,
    data_key: bytes,
    message_id: UUID,
    message_type: str,
    version: int,
    sender: str,
    recipient: str,
) -> dict[str, Any]:
    """The envelope payload `{"sealed": {...}}` carrying `payload_json` encrypted under `data_key`."""
    if len(data_key) != DATA_KEY_BYTES:
        raise ConfigError(Reason.CONFIG_INVALID, "a data key is 32 random bytes")
    nonce = secrets.token_bytes(_NONCE_BYTES)
    aad = associated_data(
        message_id=message_id, message_type=message_type, version=version, sender=sender, recipient=recipient
    )
    ciphertext = ChaCha20Poly1305(data_key).encrypt(nonce, canonical_bytes(payload_json), aad)
    return {
        SEALED_MEMBER: {
            "cipher": CIPHER,
            "nonce": b64url(nonce),
            "ciphertext": b64url(ciphertext),
            "dek_sha256": data_key_commitment(data_key),
        }
    }


def open_payload(envelope: Envelope, data_key: bytes) -> bytes:
    """The payload's JSON bytes; `payload.undecryptable` for a wrong key or moved/altered ciphertext."""
    sealed = envelope.payload.get(SEALED_MEMBER)
    if not isinstance(sealed, dict) or set(sealed) != {"cipher", "nonce", "ciphertext", "dek_sha256"}:
        raise undecryptable("the sealed payload needs exactly cipher, nonce, ciphertext and dek_sha256")
    if sealed["cipher"] != CIPHER:
        raise undecryptable(f"unsupported payload cipher {str(sealed['cipher'])[:32]!r}")
    if not isinstance(sealed["dek_sha256"], str) or sealed["dek_sha256"] != data_key_commitment(data_key):
        raise undecryptable("the data key does not match the envelope's dek_sha256 commitment")
    nonce, ciphertext = sealed["nonce"], sealed["ciphertext"]
    if not isinstance(nonce, str) or not isinstance(ciphertext, str):
        raise undecryptable("nonce and ciphertext are base64url strings")
    nonce_bytes = b64url_decode(nonce)
    if len(nonce_bytes) != _NONCE_BYTES:
        raise undecryptable("the nonce is not 12 bytes")
    aad = associated_data(
        message_id=envelope.id,
        message_type=envelope.type,
        version=envelope.version,
        sender=envelope.sender,
        recipient=envelope.recipient,
    )
    try:
        return ChaCha20Poly1305(data_key).decrypt(nonce_bytes, b64url_decode(ciphertext), aad)
    except InvalidTag:
        raise undecryptable("the payload ciphertext does not decrypt under its data key") from None


# --- wrapping the data key --------------------------------------------------------------------


@dataclass(frozen=True)
class WrappedKey:
    """The data key sealed with HPKE to one holder's key-agreement certificate (named by `kid`)."""

    holder: str
    kid: str
    enc: bytes  # HPKE single-shot output: encapsulated key, then the AEAD ciphertext


def _wrap_info(message_id: UUID, holder: str) -> bytes:
    # HPKE `info` binds the wrap to one message and one holder: it cannot be replayed on another.
    return f"labour-exchange dek v1\n{message_id}\n{holder}".encode()


def wrap_data_key(data_key: bytes, *, message_id: UUID, certificate: x509.Certificate) -> WrappedKey:
    """Seal `data_key` to the authority named by `certificate` (an X25519 key-agreement certificate)."""
    holder = common_name_of(certificate)
    public_key = certificate.public_key()
    if holder is None or not isinstance(public_key, X25519PublicKey):
        raise ConfigError(
            Reason.CONFIG_INVALID, "a data key is wrapped to an X25519 key-agreement certificate"
        )
    enc = _SUITE.encrypt(data_key, public_key, info=_wrap_info(message_id, holder))
    return WrappedKey(holder=holder, kid=certificate_thumbprint(certificate), enc=enc)


class OwnKeyMissing(ConfigError):
    """A wrap names a key-agreement certificate of ours whose private key we do not hold: our own
    failure (a key store restored without it, a key issued elsewhere), never the sender's."""

    def __init__(self, holder: str, kids: Sequence[str]) -> None:
        self.holder = holder
        self.kids = tuple(kids)
        super().__init__(
            Reason.KEY_MISSING,
            f"the data key is wrapped to {holder}'s key-agreement certificate {', '.join(self.kids)}, "
            "whose private key is not in our key store",
        )


@dataclass(frozen=True)
class Decryptor:
    """An authority's key-agreement private keys (every generation, by certificate thumbprint).

    `missing` names (by thumbprint) our certificates of this authority whose private key is not held.
    """

    authority_id: str
    keys: Mapping[str, X25519PrivateKey]
    missing: frozenset[str] = frozenset()

    def unwrap(
        self, wraps: Sequence[WrappedKey], *, message_id: UUID, dek_sha256: str | None = None
    ) -> bytes:
        """The data key from a wrap addressed to this authority; `payload.undecryptable` if none opens.

        When nothing we hold opens and a wrap names a certificate of ours whose private key is
        missing, the failure is ours: `OwnKeyMissing`, which the gateway holds and retries rather
        than answer with a negative receipt.

        Every wrap for us is tried, not only the first: the header travels outside the signature, so
        anyone on the path can add wraps, even one that opens (HPKE needs only our public key) to a
        key of their own. With `dek_sha256`, the envelope's signed commitment, only that key is taken.
        """
        mine = [wrap for wrap in wraps if wrap.holder == self.authority_id]
        if not mine:
            raise undecryptable(f"the data key is not wrapped for {self.authority_id}")
        held = [wrap for wrap in mine if wrap.kid in self.keys]
        # Kids of certificates of ours whose private key is gone: if nothing we hold opens, the
        # message may well be intact and the fault ours.
        ours_missing = sorted({wrap.kid for wrap in mine if wrap.kid in self.missing})
        if not held:
            if ours_missing:
                raise OwnKeyMissing(self.authority_id, ours_missing)
            raise undecryptable(
                f"{self.authority_id} holds no key for the certificate the data key was wrapped to"
            )
        for wrap in held:
            try:
                data_key = _SUITE.decrypt(
                    wrap.enc, self.keys[wrap.kid], info=_wrap_info(message_id, wrap.holder)
                )
            except InvalidTag:
                continue
            if len(data_key) == DATA_KEY_BYTES and dek_sha256 in (None, data_key_commitment(data_key)):
                return data_key
        if ours_missing:
            raise OwnKeyMissing(self.authority_id, ours_missing)
        raise undecryptable(
            f"none of the {len(held)} data key wraps for {self.authority_id} opens to the envelope's data key"
        )

    def holds_a_key_for(self, wraps: Sequence[WrappedKey]) -> bool:
        """Whether a wrap for this authority names one of its keys (else a newer key may be on disk)."""
        return any(wrap.holder == self.authority_id and wrap.kid in self.keys for wrap in wraps)


def unwrap_with_any(
    wraps: Sequence[WrappedKey], keys: Sequence[X25519PrivateKey], *, message_id: UUID, dek_sha256: str
) -> bytes | None:
    """The committed data key from whichever wrap one of `keys` opens, else None (an auditor's keys).

    Holder and `kid` are not trusted to pick the key: the auditor may hold several generations, or
    a holder's key from before auditors had wraps of their own. Only a key whose SHA-256 is the
    envelope's signed `dek_sha256` is taken, so a wrap someone added cannot open to another key.
    """
    for wrap in wraps:
        for key in keys:
            try:
                data_key = _SUITE.decrypt(wrap.enc, key, info=_wrap_info(message_id, wrap.holder))
            except InvalidTag:
                continue
            if data_key_commitment(data_key) == dek_sha256:
                return data_key
    return None


def committed_data_key(envelope: Envelope) -> str | None:
    """The `dek_sha256` a sealed payload commits to (signed), or None when there is none to read."""
    sealed = envelope.payload.get(SEALED_MEMBER)
    commitment = sealed.get("dek_sha256") if isinstance(sealed, dict) else None
    return commitment if isinstance(commitment, str) else None


def encode_key_header(wraps: Sequence[WrappedKey]) -> str:
    """`x-sealed-key`: base64url of canonical JSON, so it survives any AMQP header encoding."""
    document = {
        "v": _WRAP_VERSION,
        "suite": HPKE_SUITE_NAME,
        "wraps": [{"holder": w.holder, "kid": w.kid, "enc": b64url(w.enc)} for w in wraps],
    }
    return b64url(canonical_bytes(document))


def decode_key_header(value: object) -> list[WrappedKey]:
    if not isinstance(value, str) or not value or len(value) > _MAX_HEADER_CHARS:
        raise undecryptable(f"the {SEALED_KEY_HEADER} header is missing or too long")
    try:
        document = strict_loads(b64url_decode(value))
    except VerificationError:
        raise undecryptable(f"the {SEALED_KEY_HEADER} header is not base64url JSON") from None
    if (
        not isinstance(document, dict)
        or document.get("v") != _WRAP_VERSION
        or document.get("suite") != HPKE_SUITE_NAME
        or not isinstance(document.get("wraps"), list)
        or len(document["wraps"]) > _MAX_WRAPS
    ):
        raise undecryptable(f"the {SEALED_KEY_HEADER} header has an unknown layout")
    wraps: list[WrappedKey] = []
    for item in document["wraps"]:
        if not isinstance(item, dict) or not all(
            isinstance(item.get(k), str) for k in ("holder", "kid", "enc")
        ):
            raise undecryptable(f"a wrap in {SEALED_KEY_HEADER} lacks holder, kid or enc")
        try:
            enc = b64url_decode(item["enc"])
        except VerificationError:
            raise undecryptable("a wrapped data key is not base64url") from None
        wraps.append(WrappedKey(holder=item["holder"], kid=item["kid"], enc=enc))
    return wraps
