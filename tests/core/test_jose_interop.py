"""An independent JOSE library (joserfc) verifies our detached JWS, and we accept what it signs.

The key comes from the certificate in `x5c[0]`, exactly as a partner's integration team would take it.
joserfc 1.8 knows the fully specified `Ed25519` algorithm of RFC 9864 (and warns on `EdDSA`).
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from joserfc import jws
from joserfc.errors import BadSignatureError, SecurityWarning, UnsupportedAlgorithmError
from joserfc.jwk import OKPKey
from joserfc.jws import JWSRegistry

from broker.core.agreement import Agreement
from broker.core.canonical import canonical_bytes
from broker.core.catalogue import sample_payloads
from broker.core.errors import Reason, VerificationError
from broker.core.sealing import MAX_MESSAGE_BYTES, SealedMessage, open_message, seal
from broker.core.trust import TrustStore
from broker.state.keystore import KeyStore

SENDERS = {
    "worker.death": ("RU-MVD", "TJ-MOL"),
    "receipt": ("RU-GW", "TJ-GW"),
    "legislation.change": ("RU-MINTRUD", "TJ-MOL"),
}


def _registry(algorithm: str = "Ed25519") -> JWSRegistry:
    registry = JWSRegistry(algorithms=[algorithm])
    # joserfc's defaults (512-byte header) are for tokens; our header carries a certificate chain.
    registry.max_header_length = 8192
    registry.max_payload_length = MAX_MESSAGE_BYTES
    return registry


def _split(sealed: SealedMessage) -> tuple[str, bytes, dict[str, Any]]:
    """The detached JWS, the bytes it signs (the envelope without `signature`), and its header."""
    document = json.loads(sealed.raw)
    signature = document.pop("signature")
    protected = signature.split(".")[0]
    header = json.loads(base64.urlsafe_b64decode(protected + "=" * (-len(protected) % 4)))
    return signature, canonical_bytes(document), header


def _key_from_x5c(header: dict[str, Any]) -> OKPKey:
    cert = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
    pem = cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return OKPKey.import_key(pem)


@pytest.fixture(scope="module")
def sealed(dev_pki: KeyStore, pki_now: datetime) -> dict[str, SealedMessage]:
    at = pki_now + timedelta(days=10)
    return {
        message_type: seal(
            sample_payloads()[message_type],
            sender=sender,
            recipient=recipient,
            signer=dev_pki.signer(sender, at=at),
            created_at=at,
        )
        for message_type, (sender, recipient) in SENDERS.items()
    }


@pytest.mark.parametrize("message_type", sorted(SENDERS))
def test_joserfc_verifies_our_detached_jws_with_the_key_from_x5c(
    message_type: str, sealed: dict[str, SealedMessage]
) -> None:
    signature, signed_bytes, header = _split(sealed[message_type])
    key = _key_from_x5c(header)
    assert key.as_dict()["crv"] == "Ed25519"

    verified = jws.deserialize_compact(signature, key, registry=_registry(), payload=signed_bytes)

    assert verified.headers()["alg"] == "Ed25519"
    assert verified.payload == signed_bytes


def test_joserfc_rejects_a_tampered_payload(sealed: dict[str, SealedMessage]) -> None:
    signature, signed_bytes, header = _split(sealed["worker.death"])
    tampered = signed_bytes.replace(b'"sender":"RU-MVD"', b'"sender":"RU-MINTRUD"')
    assert tampered != signed_bytes
    with pytest.raises(BadSignatureError):
        jws.deserialize_compact(signature, _key_from_x5c(header), registry=_registry(), payload=tampered)


def test_joserfc_rejects_the_key_of_another_authority(sealed: dict[str, SealedMessage]) -> None:
    signature, signed_bytes, _ = _split(sealed["worker.death"])
    _, _, other_header = _split(sealed["receipt"])  # signed by RU-GW
    with pytest.raises(BadSignatureError):
        jws.deserialize_compact(
            signature, _key_from_x5c(other_header), registry=_registry(), payload=signed_bytes
        )


def test_joserfc_refuses_our_signature_under_another_algorithm_policy(
    sealed: dict[str, SealedMessage],
) -> None:
    signature, signed_bytes, header = _split(sealed["worker.death"])
    with pytest.raises(UnsupportedAlgorithmError):
        jws.deserialize_compact(
            signature, _key_from_x5c(header), registry=_registry("HS256"), payload=signed_bytes
        )


def test_kid_is_the_sha256_thumbprint_of_the_x5c_leaf(sealed: dict[str, SealedMessage]) -> None:
    _, _, header = _split(sealed["worker.death"])
    der = base64.b64decode(header["x5c"][0])
    expected = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    assert header["kid"] == expected
    assert set(header) == {"alg", "kid", "typ", "x5c"}


def _private_jwk(dev_pki: KeyStore, authority_id: str, at: datetime) -> OKPKey:
    signer = dev_pki.signer(authority_id, at=at)
    pem = signer.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return OKPKey.import_key(pem)


def test_we_accept_a_detached_jws_made_by_joserfc(
    dev_pki: KeyStore,
    pki_now: datetime,
    sealed: dict[str, SealedMessage],
    trust: TrustStore,
    agreement: Agreement,
) -> None:
    _, signed_bytes, header = _split(sealed["worker.death"])
    at = pki_now + timedelta(days=10)
    compact = jws.serialize_compact(
        header, signed_bytes, _private_jwk(dev_pki, "RU-MVD", at), registry=_registry()
    )
    detached = jws.detach_content(compact)
    assert isinstance(detached, str)
    assert detached.split(".")[1] == ""
    raw = canonical_bytes({**json.loads(signed_bytes), "signature": detached})

    opened = open_message(raw, trust=trust, agreement=agreement)

    assert opened.envelope == sealed["worker.death"].envelope
    assert opened.signer.authority_id == "RU-MVD"


def test_we_refuse_joserfc_output_signed_with_eddsa(
    dev_pki: KeyStore,
    pki_now: datetime,
    sealed: dict[str, SealedMessage],
    trust: TrustStore,
    agreement: Agreement,
) -> None:
    _, signed_bytes, header = _split(sealed["worker.death"])
    at = pki_now + timedelta(days=10)
    registry = _registry("EdDSA")
    with pytest.warns(SecurityWarning, match="RFC 9864"):  # joserfc itself deprecates EdDSA
        compact = jws.serialize_compact(
            {**header, "alg": "EdDSA"}, signed_bytes, _private_jwk(dev_pki, "RU-MVD", at), registry=registry
        )
    raw = canonical_bytes({**json.loads(signed_bytes), "signature": jws.detach_content(compact)})

    with pytest.raises(VerificationError) as info:
        open_message(raw, trust=trust, agreement=agreement)
    assert info.value.reason is Reason.SIGNATURE_ALGORITHM
