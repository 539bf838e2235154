"""Detached JWS (RFC 7515 appendix F) with the fully specified `Ed25519` algorithm (RFC 9864).

The protected header carries the signer's chain (`x5c`, leaf first) and `kid`, the base64url SHA-256
thumbprint of the leaf certificate. Only `Ed25519` is accepted: the algorithm we emit. Whether the
chain is *trusted* is decided by `broker.core.trust`; this module only proves the bytes were signed by the
key in `x5c[0]`. `typ` must be `labour-exchange+jws`, the type we emit.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding

from broker.core.canonical import canonical_bytes, strict_loads
from broker.core.errors import Reason, VerificationError
from broker.core.pki import certificate_thumbprint

ALGORITHM = "Ed25519"
MAX_CHAIN = 3
_HEADER_KEYS = frozenset({"alg", "kid", "x5c", "typ"})
TYP = "labour-exchange+jws"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    if not _B64URL.fullmatch(text):
        raise VerificationError(Reason.MESSAGE_MALFORMED, "not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise VerificationError(Reason.MESSAGE_MALFORMED, "not base64url") from None
    # The decoder ignores unused trailing bits, so several spellings decode to the same bytes; only
    # the canonical one is accepted, or one signature would match many different envelopes' bytes.
    if b64url(data) != text:
        raise VerificationError(Reason.MESSAGE_MALFORMED, "base64url is not in its canonical form")
    return data


_B64URL = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class VerifiedSignature:
    """A signature that checked out against the key of `chain[0]` (trust not yet decided)."""

    chain: tuple[x509.Certificate, ...]
    kid: str


def sign_detached(
    payload: bytes, *, private_key: Ed25519PrivateKey, chain: Sequence[x509.Certificate]
) -> str:
    """Return `<protected>..<signature>` over `payload`."""
    protected = _protected_header(tuple(chain))
    signing_input = protected.encode("ascii") + b"." + b64url(payload).encode("ascii")
    return f"{protected}..{b64url(private_key.sign(signing_input))}"


@lru_cache(maxsize=64)
def _protected_header(chain: tuple[x509.Certificate, ...]) -> str:
    """The same for every message a signer signs with one chain, so built once per chain."""
    header = {
        "alg": ALGORITHM,
        "kid": certificate_thumbprint(chain[0]),
        "typ": TYP,
        "x5c": [base64.b64encode(c.public_bytes(Encoding.DER)).decode("ascii") for c in chain],
    }
    return b64url(canonical_bytes(header))


def _load_chain(x5c: object) -> tuple[x509.Certificate, ...]:
    if not isinstance(x5c, list) or not 1 <= len(x5c) <= MAX_CHAIN:
        raise VerificationError(Reason.CERT_MALFORMED, f"x5c must be a list of 1 to {MAX_CHAIN} certificates")
    for position, item in enumerate(x5c):
        if not isinstance(item, str):
            raise VerificationError(Reason.CERT_MALFORMED, f"x5c[{position}] is not a string")
    chain = tuple(x5c)
    # The cache keys are sender-controlled: only chains of a plausible size are remembered.
    if sum(map(len, chain)) > _CACHED_CHAIN_CHARS:
        return _parse_chain.__wrapped__(chain)
    return _parse_chain(chain)


_CACHED_CHAIN_CHARS = 16 * 1024


# A peer signs every message with the same few chains: parse each once. Only parsing is cached;
# the signature, and the chain's trust at each message's time, are checked every time.
@lru_cache(maxsize=64)
def _parse_chain(x5c: tuple[str, ...]) -> tuple[x509.Certificate, ...]:
    certs = []
    for position, item in enumerate(x5c):
        try:
            certs.append(x509.load_der_x509_certificate(base64.b64decode(item, validate=True)))
        except (binascii.Error, ValueError) as exc:
            raise VerificationError(
                Reason.CERT_MALFORMED, f"x5c[{position}] is not a certificate: {exc}"
            ) from None
    return tuple(certs)


def verify_detached(jws: str, payload: bytes) -> VerifiedSignature:
    """Check `jws` over `payload`; raise VerificationError with the reason on any failure."""
    parts = jws.split(".")
    if len(parts) != 3 or parts[1] != "":
        raise VerificationError(Reason.SIGNATURE_INVALID, "not a detached compact JWS (<protected>..<sig>)")
    protected, _, signature_b64 = parts
    # The header is sender-controlled: only headers of a plausible size are remembered.
    if len(protected) > _CACHED_HEADER_CHARS:
        chain, kid, public_key = _checked_header.__wrapped__(protected)
    else:
        chain, kid, public_key = _checked_header(protected)
    signing_input = protected.encode("ascii") + b"." + b64url(payload).encode("ascii")
    try:
        public_key.verify(b64url_decode(signature_b64), signing_input)
    except InvalidSignature:
        raise VerificationError(
            Reason.SIGNATURE_INVALID, "Ed25519 signature does not match the envelope"
        ) from None
    return VerifiedSignature(chain=chain, kid=kid)


_CACHED_HEADER_CHARS = 4 * _CACHED_CHAIN_CHARS // 3 + 1024


# A peer signs every message with the same protected header (one per signing chain): parse and check
# it once. Everything here follows from the header's bytes alone; a header that fails is not cached,
# and the signature (and the chain's trust at each message's time) is still checked every time.
@lru_cache(maxsize=64)
def _checked_header(protected: str) -> tuple[tuple[x509.Certificate, ...], str, Ed25519PublicKey]:
    header = strict_loads(b64url_decode(protected))
    if not isinstance(header, dict):
        raise VerificationError(Reason.SIGNATURE_INVALID, "JWS protected header is not a JSON object")
    if header.get("alg") != ALGORITHM:
        raise VerificationError(
            Reason.SIGNATURE_ALGORITHM, f"JWS alg {header.get('alg')!r} refused; only {ALGORITHM} is accepted"
        )
    if header.get("typ") != TYP:
        # A signature made for another protocol (a JWT, another system's JWS) by a key we happen to
        # trust must not pass for one of our envelopes: only the type we emit is accepted.
        raise VerificationError(
            Reason.SIGNATURE_TYPE, f"JWS typ {str(header.get('typ'))[:64]!r} refused; only {TYP} is accepted"
        )
    unknown = set(header) - _HEADER_KEYS
    if unknown:
        # `crit`, `jku`, `jwk`, `b64`... could change how the signature is interpreted: refuse them all.
        raise VerificationError(
            Reason.SIGNATURE_INVALID, f"JWS header has unsupported members {sorted(unknown)}"
        )
    chain = _load_chain(header.get("x5c"))
    kid = header.get("kid")
    if kid != certificate_thumbprint(chain[0]):
        raise VerificationError(Reason.SIGNATURE_INVALID, "JWS kid does not match the x5c leaf certificate")
    public_key = chain[0].public_key()
    if not isinstance(public_key, Ed25519PublicKey):
        raise VerificationError(Reason.CERT_USAGE, "signer certificate does not hold an Ed25519 key")
    return chain, kid, public_key
