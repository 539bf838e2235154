"""The outside verifier's recipe of docs/decisions.md, followed step by step with no code of ours.

Inputs are what an auditor holds: an envelope's bytes and the sending country's trust bundle (PEM).
Step 4, the signature, runs with each of two independent JOSE libraries (joserfc, jwcrypto) and with
the bare Ed25519 primitive that a library knowing only `EdDSA` falls back to. Every step can refuse;
the tests show each one does, and that our gateway reaches the same verdict.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import NameOID
from joserfc import jws as joserfc_jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jws as jwcrypto_jws

from broker.core.agreement import Agreement
from broker.core.canonical import canonical_bytes
from broker.core.catalogue import sample_payloads
from broker.core.errors import Reason, VerificationError
from broker.core.jws import sign_detached
from broker.core.pki import Signer
from broker.core.sealing import open_message, seal
from broker.state.keystore import KeyStore


class Refused(Exception):
    """The recipe refuses the envelope at `step`."""

    def __init__(self, step: int, why: str) -> None:
        self.step = step
        super().__init__(f"step {step}: {why}")


SignatureCheck = Callable[[str, bytes, Ed25519PublicKey], None]


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


# --- step 4, three ways ---------------------------------------------------------------------------


def with_joserfc(compact: str, signed: bytes, key: Ed25519PublicKey) -> None:
    registry = joserfc_jws.JWSRegistry(algorithms=["Ed25519"])
    registry.max_header_length = 8192  # the x5c chain is over joserfc's 512-byte default
    try:
        joserfc_jws.deserialize_compact(compact, OKPKey.import_key(_public_pem(key)), payload=signed,
                                        registry=registry)  # fmt: skip
    except JoseError as exc:
        raise Refused(4, f"joserfc: {exc}") from exc


def with_jwcrypto(compact: str, signed: bytes, key: Ed25519PublicKey) -> None:
    token = jwcrypto_jws.JWS()
    token.deserialize(compact)
    try:
        token.verify(jwcrypto_jwk.JWK.from_pem(_public_pem(key)), alg="Ed25519", detached_payload=signed)
    except jwcrypto_jws.InvalidJWSSignature as exc:
        raise Refused(4, f"jwcrypto: {exc}") from exc


def with_the_ed25519_primitive(compact: str, signed: bytes, key: Ed25519PublicKey) -> None:
    """RFC 7515 §5.2 by hand: what a verifier whose library knows only `EdDSA` does."""
    protected, _, signature = compact.split(".")
    signing_input = protected.encode("ascii") + b"." + base64.urlsafe_b64encode(signed).rstrip(b"=")
    try:
        key.verify(_b64url(signature), signing_input)
    except InvalidSignature as exc:
        raise Refused(4, "Ed25519 signature does not verify") from exc


LIBRARIES = {"joserfc": with_joserfc, "jwcrypto": with_jwcrypto, "ed25519": with_the_ed25519_primitive}


# --- the recipe -----------------------------------------------------------------------------------


def outside_verify(raw: bytes, bundle: bytes, check_signature: SignatureCheck) -> str:
    """The authority that signed `raw`, or Refused at the first step that fails."""
    # 1. the JWS and the bytes it signs
    compact = json.loads(raw)["signature"]
    member = f',"signature":"{compact}"'.encode()
    if raw.count(member) != 1:
        raise Refused(1, "no single signature member")
    signed = raw.replace(member, b"")
    protected, middle, _ = compact.split(".")
    if middle != "":
        raise Refused(1, "not a detached JWS")
    # 2. the header
    header = json.loads(_b64url(protected))
    if set(header) != {"alg", "kid", "typ", "x5c"}:
        raise Refused(2, f"header members {sorted(header)}")
    if header["alg"] != "Ed25519" or header["typ"] != "labour-exchange+jws":
        raise Refused(2, f"alg {header['alg']}, typ {header['typ']}")
    # 3. the key
    leaf_der = base64.b64decode(header["x5c"][0])
    leaf = x509.load_der_x509_certificate(leaf_der)
    key = leaf.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise Refused(3, "not an Ed25519 key")
    if header["kid"] != base64.urlsafe_b64encode(hashlib.sha256(leaf_der).digest()).rstrip(b"=").decode():
        raise Refused(3, "kid is not the SHA-256 of x5c[0]")
    # 4. the signature
    check_signature(compact, signed, key)
    envelope = json.loads(signed)
    at = datetime.fromisoformat(envelope["created_at"])
    # 5. the chain, from the bundle (never x5c[1:]), at created_at
    cas = x509.load_pem_x509_certificates(bundle)
    ca = next((c for c in cas if c.subject == leaf.issuer and _issued(leaf, c)), None)
    if ca is None:
        raise Refused(5, "no CA of the bundle issued the signer certificate")
    for cert in (ca, leaf):
        if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
            raise Refused(5, f"{cert.subject.rfc4514_string()} not valid at {at}")
    if leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
        raise Refused(5, "the signer is a CA")
    if not leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature:
        raise Refused(5, "the signer may not sign")
    # 6. revocation
    crl = x509.load_pem_x509_crl(_pem_block(bundle, b"X509 CRL"))
    ca_key = ca.public_key()
    if not (isinstance(ca_key, Ed25519PublicKey) and crl.is_signature_valid(ca_key)):
        raise Refused(6, "the CRL is not signed by the CA")
    entry = crl.get_revoked_certificate_by_serial_number(leaf.serial_number)
    if entry is not None and entry.revocation_date_utc <= at:
        raise Refused(6, f"revoked at {entry.revocation_date_utc}")
    # 7. who signed
    authority, country = _one(leaf, NameOID.COMMON_NAME, "CN"), _one(leaf, NameOID.COUNTRY_NAME, "C")
    ca_country = _one(ca, NameOID.COUNTRY_NAME, "C")
    if country != ca_country or not authority.startswith(f"{ca_country}-"):
        raise Refused(7, f"{authority} is no authority of {ca_country}")
    if authority != envelope["sender"]:
        raise Refused(7, f"signed by {authority}, sender {envelope['sender']}")
    return authority


def _one(cert: x509.Certificate, oid: x509.ObjectIdentifier, label: str) -> str:
    values = [a.value for a in cert.subject.get_attributes_for_oid(oid)]
    if len(values) != 1 or not isinstance(values[0], str):
        raise Refused(7, f"the subject needs exactly one {label}")
    return values[0]


def _issued(leaf: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        leaf.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _pem_block(bundle: bytes, label: bytes) -> bytes:
    found = re.search(b"-----BEGIN " + label + b"-----.+?-----END " + label + b"-----", bundle, re.S)
    assert found is not None, label
    return found.group(0)


# --- the evidence ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory, agreement: Agreement, pki_now: datetime) -> KeyStore:
    """A key store of this module's own: it revokes a certificate."""
    store = KeyStore(root=Path(tmp_path_factory.mktemp("outside-keys")), crl_validity_days=366)
    for country in ("RU", "TJ"):
        store.init_country(country, now=pki_now)
    for authority in ("RU-MVD", "RU-MINTRUD", "TJ-MOL"):
        store.issue(authority, authority[:2], now=pki_now)
    store.revoke("RU-MINTRUD", now=pki_now + timedelta(days=20))
    return store


def death_notice(keys: KeyStore, at: datetime, *, sender: str = "RU-MVD") -> bytes:
    return seal(sample_payloads()["worker.death"], sender=sender, recipient="TJ-MOL",
                signer=keys.signer(sender, at=at), created_at=at).raw  # fmt: skip


@pytest.mark.parametrize("library", sorted(LIBRARIES))
def test_an_outside_verifier_accepts_an_envelope_as_our_gateway_does(
    library: str, keys: KeyStore, pki_now: datetime, agreement: Agreement
) -> None:
    raw = death_notice(keys, pki_now + timedelta(days=10))
    assert outside_verify(raw, keys.export_bundle("RU"), LIBRARIES[library]) == "RU-MVD"
    opened = open_message(raw, trust=keys.trust_store(["RU", "TJ"]), agreement=agreement)
    assert opened.signer.authority_id == "RU-MVD"


@pytest.mark.parametrize(
    ("message_type", "sender"),
    [
        ("worker.death", "RU-MVD"),
        ("legislation.change", "RU-MINTRUD"),
        ("labour_market.report", "RU-MINTRUD"),
    ],
)
def test_cutting_the_signature_member_out_leaves_the_canonical_form_of_the_rest(
    message_type: str, sender: str, keys: KeyStore, pki_now: datetime
) -> None:
    at = pki_now + timedelta(days=10)
    signer = keys.signer(sender, at=at)
    raw = seal(
        sample_payloads()[message_type], sender=sender, recipient="TJ-MOL", signer=signer, created_at=at
    ).raw
    document = json.loads(raw)
    compact = document.pop("signature")
    assert raw.replace(f',"signature":"{compact}"'.encode(), b"") == canonical_bytes(document)


@pytest.mark.parametrize("library", sorted(LIBRARIES))
def test_an_outside_verifier_refuses_tampered_bytes_with_each_library(
    library: str, keys: KeyStore, pki_now: datetime
) -> None:
    raw = death_notice(keys, pki_now + timedelta(days=10))
    tampered = raw.replace(b'"recipient":"TJ-MOL"', b'"recipient":"TJ-MFA"')
    assert tampered != raw
    with pytest.raises(Refused) as refused:
        outside_verify(tampered, keys.export_bundle("RU"), LIBRARIES[library])
    assert refused.value.step == 4


def test_joserfc_with_its_default_header_limit_refuses_every_envelope(
    keys: KeyStore, pki_now: datetime
) -> None:
    at = pki_now + timedelta(days=10)
    raw = death_notice(keys, at)
    compact = json.loads(raw)["signature"]
    signed = raw.replace(f',"signature":"{compact}"'.encode(), b"")
    leaf_key = keys.signer("RU-MVD", at=at).private_key.public_key()
    defaults = joserfc_jws.JWSRegistry(algorithms=["Ed25519"])
    with pytest.raises(JoseError, match="512"):
        joserfc_jws.deserialize_compact(compact, OKPKey.import_key(_public_pem(leaf_key)), payload=signed,
                                        registry=defaults)  # fmt: skip
    with_joserfc(compact, signed, leaf_key)  # the limit raised as step 4 says


def test_the_chain_must_end_in_the_bundle_of_the_senders_country(keys: KeyStore, pki_now: datetime) -> None:
    raw = death_notice(keys, pki_now + timedelta(days=10))
    with pytest.raises(Refused) as refused:
        outside_verify(raw, keys.export_bundle("TJ"), with_jwcrypto)  # TJ's CA did not issue RU-MVD
    assert refused.value.step == 5


def test_a_revoked_signer_is_refused_after_its_revocation_only(
    keys: KeyStore, pki_now: datetime, agreement: Agreement
) -> None:
    bundle = keys.export_bundle("RU")
    before = death_notice(keys, pki_now + timedelta(days=10), sender="RU-MINTRUD")
    assert outside_verify(before, bundle, with_joserfc) == "RU-MINTRUD"
    # The key before its revocation signs a later date, as a stolen key would.
    stolen = keys.signer("RU-MINTRUD", at=pki_now + timedelta(days=10))
    after = _resealed(before, at=pki_now + timedelta(days=30), by=stolen)
    with pytest.raises(Refused) as refused:
        outside_verify(after, bundle, with_joserfc)
    assert refused.value.step == 6
    with pytest.raises(VerificationError) as ours:
        open_message(after, trust=keys.trust_store(["RU", "TJ"]), agreement=agreement)
    assert ours.value.reason is Reason.CERT_REVOKED


def test_a_signature_by_another_authority_than_the_sender_is_refused(
    keys: KeyStore, pki_now: datetime, agreement: Agreement
) -> None:
    at = pki_now + timedelta(days=10)
    # RU-MVD signs an envelope naming RU-MINTRUD as its sender: the signature itself is good.
    forged = _resealed(death_notice(keys, at, sender="RU-MINTRUD"), at=at, by=keys.signer("RU-MVD", at=at))
    with pytest.raises(Refused) as refused:
        outside_verify(forged, keys.export_bundle("RU"), with_the_ed25519_primitive)
    assert refused.value.step == 7
    with pytest.raises(VerificationError) as ours:
        open_message(forged, trust=keys.trust_store(["RU", "TJ"]), agreement=agreement)
    assert ours.value.reason is Reason.CERT_AUTHORITY_MISMATCH


def test_a_header_saying_eddsa_is_refused_before_any_library_runs(keys: KeyStore, pki_now: datetime) -> None:
    raw = death_notice(keys, pki_now + timedelta(days=10))
    compact = json.loads(raw)["signature"]
    protected = json.loads(_b64url(compact.split(".")[0]))
    relabelled = (
        base64.urlsafe_b64encode(json.dumps({**protected, "alg": "EdDSA"}).encode()).rstrip(b"=").decode()
    )
    raw = raw.replace(compact.split(".")[0].encode(), relabelled.encode())
    with pytest.raises(Refused) as refused:
        outside_verify(raw, keys.export_bundle("RU"), with_jwcrypto)
    assert refused.value.step == 2


def _resealed(raw: bytes, *, at: datetime, by: Signer) -> bytes:
    """The envelope of `raw` created at `at` and signed by `by`, whoever it names as sender."""
    document = json.loads(raw)
    del document["signature"]
    document["created_at"] = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    signature = sign_detached(canonical_bytes(document), private_key=by.private_key, chain=by.chain)
    return canonical_bytes({**document, "signature": signature})


def test_a_kid_that_is_not_the_thumbprint_of_the_leaf_is_refused(keys: KeyStore, pki_now: datetime) -> None:
    raw = death_notice(keys, pki_now + timedelta(days=10))
    protected = json.loads(raw)["signature"].split(".")[0]
    header = json.loads(_b64url(protected))
    kid = header["kid"]
    wrong_kid = ("A" if kid[0] != "A" else "B") + kid[1:]
    relabelled = base64.urlsafe_b64encode(json.dumps({**header, "kid": wrong_kid}).encode()).rstrip(b"=")
    with pytest.raises(Refused) as refused:
        outside_verify(raw.replace(protected.encode(), relabelled), keys.export_bundle("RU"), with_joserfc)
    assert refused.value.step == 3
