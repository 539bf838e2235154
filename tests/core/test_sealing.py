"""Acceptance tests of the trusted core: `seal` and `open_message` over the session's dev PKI.

Every hostile input must come back as a `RemoteError` whose reason code names what failed; any other
exception escaping `open_message` is a bug the gateway would crash on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from broker.core.agreement import Agreement
from broker.core.canonical import canonical_bytes
from broker.core.catalogue import Payload, payload_to_json, sample_payloads
from broker.core.envelope import Envelope
from broker.core.errors import (
    PolicyError,
    Reason,
    RemoteError,
    ReplayError,
    ValidationError,
    VerificationError,
)
from broker.core.ids import uuid7
from broker.core.jws import ALGORITHM, TYP, b64url
from broker.core.pki import Signer, certificate_thumbprint, create_ca, issue_authority_certificate
from broker.core.sealing import (
    MAX_MESSAGE_BYTES,
    SealedMessage,
    check_freshness,
    open_message,
    seal,
    seal_envelope,
)
from broker.core.trust import TrustStore
from broker.state.keystore import KeyStore

# Who sends each sample across the border, as the agreement allows (the samples describe a Tajik
# worker in Russia, Russian permits and reports, and a Tajik recruitment agency).
ROUTES: Mapping[str, tuple[str, str]] = {
    "legislation.change": ("RU-MINTRUD", "TJ-MOL"),
    "employer.permit": ("RU-MVD", "TJ-MOL"),
    "recruitment_agency.license": ("TJ-MOL", "RU-MVD"),
    "labour_market.report": ("RU-MINTRUD", "TJ-MOL"),
    "work_permit.cancellation": ("RU-MVD", "TJ-MOL"),
    "worker.death": ("RU-MVD", "TJ-MOL"),
    "receipt": ("RU-GW", "TJ-GW"),
    "receipt.batch": ("RU-GW", "TJ-GW"),
    "trust.update": ("RU-CA", "TJ-GW"),
    "checkpoint.witness": ("TJ-GW", "RU-GW"),
}

SENT_AFTER_ISSUE = timedelta(days=60)


@pytest.fixture(scope="module")
def sent_at(pki_now: datetime) -> datetime:
    """A message time inside every session certificate's validity."""
    return pki_now + SENT_AFTER_ISSUE


def _seal_sample(
    store: KeyStore,
    message_type: str,
    *,
    created_at: datetime,
    sender: str | None = None,
    recipient: str | None = None,
    signer: Signer | None = None,
) -> SealedMessage:
    route_sender, route_recipient = ROUTES[message_type]
    sender = sender or route_sender
    return seal(
        sample_payloads()[message_type],
        sender=sender,
        recipient=recipient or route_recipient,
        signer=signer or store.signer(sender, at=created_at),
        created_at=created_at,
    )


@pytest.fixture(scope="module")
def sealed_samples(dev_pki: KeyStore, sent_at: datetime) -> dict[str, SealedMessage]:
    return {message_type: _seal_sample(dev_pki, message_type, created_at=sent_at) for message_type in ROUTES}


def _open(raw: bytes, trust: TrustStore, agreement: Agreement, **kwargs: Any) -> None:
    open_message(raw, trust=trust, agreement=agreement, **kwargs)


def _reason_of(raw: bytes, trust: TrustStore, agreement: Agreement, **kwargs: Any) -> RemoteError:
    with pytest.raises(RemoteError) as info:
        _open(raw, trust, agreement, **kwargs)
    return info.value


def _forge(
    document: Mapping[str, Any],
    *,
    header: Mapping[str, Any],
    sign: Callable[[bytes], bytes],
) -> bytes:
    """Wire bytes carrying an attacker-chosen JWS header and signature function over `document`."""
    protected = b64url(canonical_bytes(dict(header)))
    signing_input = f"{protected}.{b64url(canonical_bytes(dict(document)))}".encode("ascii")
    signature = f"{protected}..{b64url(sign(signing_input))}"
    return canonical_bytes({**document, "signature": signature})


def _header_for(chain: tuple[x509.Certificate, ...]) -> dict[str, Any]:
    return {
        "alg": ALGORITHM,
        "kid": certificate_thumbprint(chain[0]),
        "typ": TYP,
        "x5c": [base64.b64encode(cert.public_bytes(Encoding.DER)).decode("ascii") for cert in chain],
    }


def _set_path(document: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    target = document
    for part in parents:
        target = target[part]
    target[last] = value


# --- round trip ------------------------------------------------------------------------------


def test_routes_cover_every_type_of_the_agreement_and_the_catalogue(agreement: Agreement) -> None:
    assert set(ROUTES) == set(agreement.types()) == set(sample_payloads())


@pytest.mark.parametrize("message_type", sorted(ROUTES))
def test_every_type_round_trips(
    message_type: str,
    sealed_samples: dict[str, SealedMessage],
    trust: TrustStore,
    agreement: Agreement,
) -> None:
    sealed = sealed_samples[message_type]
    wire = bytes(sealed.raw)  # what the transport carries: bytes, nothing else

    local_country = agreement.authority(sealed.envelope.recipient).country
    opened = open_message(wire, trust=trust, agreement=agreement, local_country=local_country)

    assert opened.payload == sample_payloads()[message_type]
    assert opened.envelope == sealed.envelope
    assert opened.raw == wire
    assert opened.sha256 == sealed.sha256 == hashlib.sha256(wire).hexdigest()
    assert opened.signer.authority_id == sealed.envelope.sender == ROUTES[message_type][0]
    assert opened.envelope.type == message_type


def test_sealed_bytes_are_canonical_and_carry_a_detached_jws(
    sealed_samples: dict[str, SealedMessage],
) -> None:
    sealed = sealed_samples["worker.death"]
    document = json.loads(sealed.raw)
    assert canonical_bytes(document) == sealed.raw
    protected, empty_payload, signature = document["signature"].split(".")
    assert empty_payload == ""
    assert len(base64.urlsafe_b64decode(signature + "==")) == 64  # one Ed25519 signature
    header = json.loads(base64.urlsafe_b64decode(protected + "=" * (-len(protected) % 4)))
    assert header["alg"] == "Ed25519"


# --- tampering ---------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_changing_any_single_byte_is_rejected_with_a_reason(
    data: st.DataObject,
    sealed_samples: dict[str, SealedMessage],
    trust: TrustStore,
    agreement: Agreement,
) -> None:
    raw = sealed_samples[data.draw(st.sampled_from(sorted(ROUTES)), label="type")].raw
    # Half the draws aim at the JWS value: few bytes, and the ones where lenient decoding hides.
    start = raw.index(b'"signature":"') + len(b'"signature":"')
    end = raw.index(b'"', start)
    anywhere = st.integers(min_value=0, max_value=len(raw) - 1)
    in_signature = st.integers(min_value=start, max_value=end - 1)
    position = data.draw(st.one_of(anywhere, in_signature), label="position")
    value = data.draw(
        st.integers(min_value=0, max_value=255).filter(lambda b: b != raw[position]), label="value"
    )
    mutated = raw[:position] + bytes([value]) + raw[position + 1 :]

    error = _reason_of(mutated, trust, agreement)  # any other exception fails the test

    assert error.reason in set(Reason)


def test_every_other_spelling_of_the_signature_is_refused(
    sealed_samples: dict[str, SealedMessage], trust: TrustStore, agreement: Agreement
) -> None:
    # 64 bytes in 86 base64url characters leave 4 unused bits in the last one: a lenient decoder
    # would accept 16 spellings of one signature, i.e. 16 different envelopes with one signature.
    raw = sealed_samples["worker.death"].raw
    document = json.loads(raw)
    signature: str = document["signature"]
    for replacement in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_":
        if replacement == signature[-1]:
            continue
        forged = canonical_bytes({**document, "signature": signature[:-1] + replacement})
        assert _reason_of(forged, trust, agreement).reason in {
            Reason.MESSAGE_MALFORMED,
            Reason.SIGNATURE_INVALID,
        }


def _leaf_paths(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    if isinstance(value, dict):
        return [leaf for key, child in value.items() for leaf in _leaf_paths(child, (*path, key))]
    if isinstance(value, list):
        return [leaf for index, child in enumerate(value) for leaf in _leaf_paths(child, (*path, index))]
    return [path]


_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_changing_any_field_keeps_canonical_form_but_breaks_the_signature(
    data: st.DataObject,
    sealed_samples: dict[str, SealedMessage],
    trust: TrustStore,
    agreement: Agreement,
) -> None:
    raw = sealed_samples[data.draw(st.sampled_from(sorted(ROUTES)), label="type")].raw
    document = json.loads(raw)
    signature = document.pop("signature")
    path = data.draw(st.sampled_from(_leaf_paths(document)), label="path")
    new_value = data.draw(_json_scalars, label="new value")
    parent: Any = document
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = new_value
    forged = canonical_bytes({**document, "signature": signature})
    assume(forged != raw)  # e.g. the same value drawn again

    error = _reason_of(forged, trust, agreement)

    assert error.reason is Reason.SIGNATURE_INVALID


@pytest.mark.parametrize(
    "field", ["sender", "recipient", "created_at", "id", "type", "version", "correlation_id"]
)
def test_changing_an_envelope_field_breaks_the_signature(
    field: str, sealed_samples: dict[str, SealedMessage], trust: TrustStore, agreement: Agreement
) -> None:
    document = json.loads(sealed_samples["worker.death"].raw)
    replacements: dict[str, Any] = {
        "sender": "RU-MINTRUD",
        "recipient": "TJ-CONSULATE-MOSCOW",
        "created_at": "2025-03-02T00:00:01.000000Z",
        "id": str(uuid7()),
        "type": "work_permit.cancellation",
        "version": 2,
        "correlation_id": str(uuid7()),
    }
    document[field] = replacements[field]
    assert _reason_of(canonical_bytes(document), trust, agreement).reason is Reason.SIGNATURE_INVALID


# --- certificates ----------------------------------------------------------------------------


def test_message_dated_after_the_certificate_expired_is_refused(
    dev_pki: KeyStore, sent_at: datetime, pki_now: datetime, trust: TrustStore, agreement: Agreement
) -> None:
    signer = dev_pki.signer("RU-MVD", at=sent_at)
    late = pki_now + timedelta(days=400)
    sealed = _seal_sample(dev_pki, "worker.death", created_at=late, signer=signer)
    assert _reason_of(sealed.raw, trust, agreement).reason is Reason.CERT_EXPIRED


def test_message_dated_before_the_certificate_is_refused(
    dev_pki: KeyStore, sent_at: datetime, pki_now: datetime, trust: TrustStore, agreement: Agreement
) -> None:
    signer = dev_pki.signer("RU-MVD", at=sent_at)
    early = pki_now - timedelta(days=1)
    sealed = _seal_sample(dev_pki, "worker.death", created_at=early, signer=signer)
    assert _reason_of(sealed.raw, trust, agreement).reason is Reason.CERT_NOT_YET_VALID


def test_certificate_from_an_attacker_ca_with_the_same_name_is_untrusted(
    pki_now: datetime, sent_at: datetime, dev_pki: KeyStore, trust: TrustStore, agreement: Agreement
) -> None:
    ca_key, ca_cert = create_ca(country="RU", not_before=pki_now, not_after=pki_now + timedelta(days=3650))
    assert ca_cert.subject == trust.anchors("RU")[0].subject  # same name, other key
    leaf_key = Ed25519PrivateKey.generate()
    leaf = issue_authority_certificate(
        ca_key=ca_key,
        ca_cert=ca_cert,
        authority_id="RU-MVD",
        country="RU",
        public_key=leaf_key.public_key(),
        not_before=pki_now,
        not_after=pki_now + timedelta(days=365),
    )
    signer = Signer(authority_id="RU-MVD", private_key=leaf_key, chain=(leaf, ca_cert))
    sealed = _seal_sample(dev_pki, "worker.death", created_at=sent_at, signer=signer)
    assert _reason_of(sealed.raw, trust, agreement).reason is Reason.CERT_UNTRUSTED


def _self_signed_leaf(key: Ed25519PrivateKey, *, authority_id: str, start: datetime) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, authority_id[:2]),
            x509.NameAttribute(NameOID.COMMON_NAME, authority_id),
        ]
    )
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .sign(private_key=key, algorithm=None)
    )


def test_self_signed_leaf_in_x5c_is_untrusted(
    pki_now: datetime, sent_at: datetime, dev_pki: KeyStore, trust: TrustStore, agreement: Agreement
) -> None:
    key = Ed25519PrivateKey.generate()
    leaf = _self_signed_leaf(key, authority_id="RU-MVD", start=pki_now)
    # The real RU CA rides along as a "hint": it must not lend its trust to the leaf.
    signer = Signer(authority_id="RU-MVD", private_key=key, chain=(leaf, trust.anchors("RU")[0]))
    sealed = _seal_sample(dev_pki, "worker.death", created_at=sent_at, signer=signer)
    assert _reason_of(sealed.raw, trust, agreement).reason is Reason.CERT_UNTRUSTED


def test_signed_by_another_authority_than_the_sender_is_a_mismatch(
    dev_pki: KeyStore, sent_at: datetime, trust: TrustStore, agreement: Agreement
) -> None:
    mintrud = dev_pki.signer("RU-MINTRUD", at=sent_at)
    sealed = _seal_sample(dev_pki, "worker.death", created_at=sent_at, sender="RU-MVD", signer=mintrud)
    assert _reason_of(sealed.raw, trust, agreement).reason is Reason.CERT_AUTHORITY_MISMATCH


def test_authority_not_allowed_to_send_the_type_is_refused_with_the_article(
    dev_pki: KeyStore, sent_at: datetime, trust: TrustStore, agreement: Agreement
) -> None:
    sealed = _seal_sample(dev_pki, "worker.death", created_at=sent_at, sender="RU-MINTRUD")
    error = _reason_of(sealed.raw, trust, agreement)
    assert isinstance(error, PolicyError)
    assert error.reason is Reason.POLICY_SENDER_NOT_ALLOWED
    assert error.article == "15.5"


def test_recipient_outside_the_agreement_is_unknown(
    dev_pki: KeyStore, sent_at: datetime, trust: TrustStore, agreement: Agreement
) -> None:
    sealed = _seal_sample(dev_pki, "worker.death", created_at=sent_at, recipient="TJ-NOBODY")
    assert _reason_of(sealed.raw, trust, agreement).reason is Reason.POLICY_RECIPIENT_UNKNOWN


def test_revoked_certificate_fails_for_messages_dated_after_the_revocation(
    tmp_path: Path, pki_now: datetime, agreement: Agreement
) -> None:
    store = _fresh_store(tmp_path, pki_now, agreement)
    signer = store.signer("RU-MVD", at=pki_now + timedelta(days=1))
    revoked_at = pki_now + timedelta(days=30)
    store.revoke("RU-MVD", now=revoked_at)
    trust = store.trust_store(agreement.countries)

    before = _seal_sample(store, "worker.death", created_at=revoked_at - timedelta(seconds=1), signer=signer)
    after = _seal_sample(store, "worker.death", created_at=revoked_at, signer=signer)

    _open(before.raw, trust, agreement)
    assert _reason_of(after.raw, trust, agreement).reason is Reason.CERT_REVOKED


def _fresh_store(root: Path, now: datetime, agreement: Agreement) -> KeyStore:
    store = KeyStore(root=root)
    for country in agreement.countries:
        store.init_country(country, now=now)
    store.issue("RU-MVD", "RU", now=now)
    return store


def test_rotation_overlap_then_revocation_of_the_old_certificate(
    tmp_path: Path, pki_now: datetime, agreement: Agreement
) -> None:
    store = _fresh_store(tmp_path, pki_now, agreement)
    old = store.signer("RU-MVD", at=pki_now + timedelta(days=1))
    rotated_at = pki_now + timedelta(days=100)
    store.rotate("RU-MVD", now=rotated_at)
    new = store.signer("RU-MVD", at=rotated_at + timedelta(days=1))
    assert new.chain[0].serial_number != old.chain[0].serial_number

    overlap = rotated_at + timedelta(days=2)
    from_old = _seal_sample(store, "worker.death", created_at=overlap, signer=old)
    from_new = _seal_sample(store, "worker.death", created_at=overlap, signer=new)
    trust = store.trust_store(agreement.countries)
    for sealed in (from_old, from_new):
        opened = open_message(sealed.raw, trust=trust, agreement=agreement)
        assert opened.signer.authority_id == "RU-MVD"
    assert open_message(from_old.raw, trust=trust, agreement=agreement).signer.certificate == old.chain[0]

    revoked_at = rotated_at + timedelta(days=10)
    assert store.revoke("RU-MVD", old.chain[0].serial_number, now=revoked_at) == [old.chain[0].serial_number]
    trust = store.trust_store(agreement.countries)
    late_old = _seal_sample(store, "worker.death", created_at=revoked_at + timedelta(hours=1), signer=old)
    late_new = _seal_sample(store, "worker.death", created_at=revoked_at + timedelta(hours=1), signer=new)

    assert _reason_of(late_old.raw, trust, agreement).reason is Reason.CERT_REVOKED
    _open(from_old.raw, trust, agreement)  # signed before the revocation: still proves what it said
    _open(from_new.raw, trust, agreement)
    _open(late_new.raw, trust, agreement)


# --- the JWS header --------------------------------------------------------------------------


def _unsigned_death(dev_pki: KeyStore, sent_at: datetime) -> tuple[dict[str, Any], Signer]:
    sealed = _seal_sample(dev_pki, "worker.death", created_at=sent_at)
    document = json.loads(sealed.raw)
    del document["signature"]
    return document, dev_pki.signer("RU-MVD", at=sent_at)


@pytest.mark.parametrize("alg", ["none", "EdDSA", "HS256", "RS256", "ES256", "ed25519", ""])
def test_only_the_ed25519_algorithm_is_accepted(
    alg: str, dev_pki: KeyStore, sent_at: datetime, trust: TrustStore, agreement: Agreement
) -> None:
    document, signer = _unsigned_death(dev_pki, sent_at)
    public_raw = signer.chain[0].public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    signers: dict[str, Callable[[bytes], bytes]] = {
        "none": lambda _: b"",
        # Key confusion: an HMAC keyed with the public key, which any attacker holds.
        "HS256": lambda data: hmac.new(public_raw, data, hashlib.sha256).digest(),
    }
    forged = _forge(
        document,
        header={**_header_for(signer.chain), "alg": alg},
        sign=signers.get(alg, signer.private_key.sign),
    )
    assert _reason_of(forged, trust, agreement).reason is Reason.SIGNATURE_ALGORITHM


@pytest.mark.parametrize(
    "typ", ["JWT", "JOSE", "LABOUR-EXCHANGE+JWS", "application/labour-exchange+jws", "", None]
)
def test_a_signature_of_another_type_is_refused_even_by_a_trusted_key(
    typ: str | None, dev_pki: KeyStore, sent_at: datetime, trust: TrustStore, agreement: Agreement
) -> None:
    # RU-MVD's real key signs with an honest header but for another `typ` (None: the member left out).
    document, signer = _unsigned_death(dev_pki, sent_at)
    header = {key: value for key, value in _header_for(signer.chain).items() if key != "typ"}
    if typ is not None:
        header["typ"] = typ
    forged = _forge(document, header=header, sign=signer.private_key.sign)
    assert _reason_of(forged, trust, agreement).reason is Reason.SIGNATURE_TYPE


def test_a_correctly_formed_forgery_with_the_real_header_opens(
    dev_pki: KeyStore, sent_at: datetime, trust: TrustStore, agreement: Agreement
) -> None:
    # Control for the header tests: `_forge` with an honest header and key yields a valid message.
    document, signer = _unsigned_death(dev_pki, sent_at)
    _open(_forge(document, header=_header_for(signer.chain), sign=signer.private_key.sign), trust, agreement)


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"crit": ["exp"], "exp": 1}, id="crit"),
        pytest.param({"crit": ["b64"], "b64": False}, id="unencoded-payload"),
        pytest.param({"jku": "https://attacker.example/keys"}, id="jku"),
        pytest.param({"x5u": "https://attacker.example/cert"}, id="x5u"),
    ],
)
def test_header_members_that_change_the_meaning_are_refused(
    extra: dict[str, Any], dev_pki: KeyStore, sent_at: datetime, trust: TrustStore, agreement: Agreement
) -> None:
    document, signer = _unsigned_death(dev_pki, sent_at)
    forged = _forge(document, header={**_header_for(signer.chain), **extra}, sign=signer.private_key.sign)
    assert _reason_of(forged, trust, agreement).reason is Reason.SIGNATURE_INVALID


def test_embedded_jwk_is_refused(
    dev_pki: KeyStore, sent_at: datetime, trust: TrustStore, agreement: Agreement
) -> None:
    document, signer = _unsigned_death(dev_pki, sent_at)
    attacker = Ed25519PrivateKey.generate()
    x = b64url(attacker.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    header = {**_header_for(signer.chain), "jwk": {"kty": "OKP", "crv": "Ed25519", "x": x}}
    forged = _forge(document, header=header, sign=attacker.sign)
    assert _reason_of(forged, trust, agreement).reason is Reason.SIGNATURE_INVALID


def test_x5c_key_substitution_is_refused(
    dev_pki: KeyStore, sent_at: datetime, trust: TrustStore, agreement: Agreement
) -> None:
    document, signer = _unsigned_death(dev_pki, sent_at)
    # The attacker presents RU-MVD's genuine (public) chain but signs with a key of their own.
    attacker = Ed25519PrivateKey.generate()
    forged = _forge(document, header=_header_for(signer.chain), sign=attacker.sign)
    assert _reason_of(forged, trust, agreement).reason is Reason.SIGNATURE_INVALID


def test_swapping_x5c_under_an_existing_signature_is_refused(
    dev_pki: KeyStore,
    sent_at: datetime,
    sealed_samples: dict[str, SealedMessage],
    trust: TrustStore,
    agreement: Agreement,
) -> None:
    document = json.loads(sealed_samples["worker.death"].raw)
    protected, _, signature = document["signature"].split(".")
    original_kid = json.loads(base64.urlsafe_b64decode(protected + "=" * (-len(protected) % 4)))["kid"]
    other_chain = dev_pki.signer("RU-MINTRUD", at=sent_at).chain
    # Another authority's genuine chain under RU-MVD's signature, with its own kid or the original.
    for header in (_header_for(other_chain), {**_header_for(other_chain), "kid": original_kid}):
        document["signature"] = f"{b64url(canonical_bytes(header))}..{signature}"
        assert _reason_of(canonical_bytes(document), trust, agreement).reason is Reason.SIGNATURE_INVALID


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        pytest.param(None, Reason.SIGNATURE_MISSING, id="null"),
        pytest.param(7, Reason.SIGNATURE_INVALID, id="number"),
        pytest.param("", Reason.SIGNATURE_INVALID, id="empty"),
        pytest.param("a.b.c", Reason.SIGNATURE_INVALID, id="attached-payload"),
        pytest.param("a..b..c", Reason.SIGNATURE_INVALID, id="too-many-parts"),
    ],
)
def test_unusable_signature_values(
    signature: object,
    reason: Reason,
    sealed_samples: dict[str, SealedMessage],
    trust: TrustStore,
    agreement: Agreement,
) -> None:
    document = json.loads(sealed_samples["worker.death"].raw)
    document["signature"] = signature
    assert _reason_of(canonical_bytes(document), trust, agreement).reason is reason


def test_stripped_signature_is_missing(
    sealed_samples: dict[str, SealedMessage], trust: TrustStore, agreement: Agreement
) -> None:
    document = json.loads(sealed_samples["worker.death"].raw)
    del document["signature"]
    assert _reason_of(canonical_bytes(document), trust, agreement).reason is Reason.SIGNATURE_MISSING


# --- the envelope and payload schema -----------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        pytest.param({"version": "1"}, Reason.SCHEMA_INVALID, id="version-as-string"),
        pytest.param({"priority": "high"}, Reason.SCHEMA_INVALID, id="unknown-envelope-member"),
        pytest.param({"created_at": "2025-03-02T03:00:00.000000+03:00"}, Reason.SCHEMA_INVALID, id="not-utc"),
        pytest.param({"version": 2}, Reason.SCHEMA_UNKNOWN_TYPE, id="unknown-version"),
        pytest.param({"type": "worker.birth"}, Reason.POLICY_TYPE_NOT_COVERED, id="type-outside-agreement"),
    ],
)
def test_correctly_signed_but_invalid_envelopes(
    edit: dict[str, Any],
    reason: Reason,
    dev_pki: KeyStore,
    sent_at: datetime,
    trust: TrustStore,
    agreement: Agreement,
) -> None:
    document, signer = _unsigned_death(dev_pki, sent_at)
    forged = _forge({**document, **edit}, header=_header_for(signer.chain), sign=signer.private_key.sign)
    assert _reason_of(forged, trust, agreement).reason is reason


def _seal_edited_payload(
    dev_pki: KeyStore, message_type: str, edits: Mapping[str, Any], created_at: datetime
) -> SealedMessage:
    """A correctly signed message whose payload JSON was edited by hand (bypassing the models)."""
    payload = payload_to_json(sample_payloads()[message_type])
    for dotted, value in edits.items():
        _set_path(payload, dotted, value)
    sender, recipient = ROUTES[message_type]
    sample: Payload = sample_payloads()[message_type]
    envelope = Envelope(
        id=uuid7(),
        type=message_type,
        version=sample.VERSION,
        sender=sender,
        recipient=recipient,
        created_at=created_at,
        payload=payload,  # type: ignore[arg-type]  # JSON-ready dict from payload_to_json
    )
    return seal_envelope(envelope, signer=dev_pki.signer(sender, at=created_at))


def test_payload_with_an_unknown_field_is_schema_invalid(
    dev_pki: KeyStore, sent_at: datetime, trust: TrustStore, agreement: Agreement
) -> None:
    sealed = _seal_edited_payload(dev_pki, "worker.death", {"cause_of_death": "n/a"}, sent_at)
    assert _reason_of(sealed.raw, trust, agreement).reason is Reason.SCHEMA_INVALID


@pytest.mark.parametrize(
    ("message_type", "edits", "article"),
    [
        pytest.param("worker.death", {"worker.date_of_birth": "2010-01-01"}, "10", id="art10-death"),
        pytest.param(
            "work_permit.cancellation", {"worker.date_of_birth": "2008-01-01"}, "10", id="art10-permit"
        ),
        pytest.param("work_permit.cancellation", {"permit.expiry_date": "2027-05-21"}, "4.2", id="art4.2"),
        pytest.param("work_permit.cancellation", {"departure_deadline": "2025-02-26"}, "14", id="art14-late"),
        pytest.param(
            "work_permit.cancellation", {"departure_deadline": "2025-02-24"}, "14", id="art14-early"
        ),
        pytest.param("worker.death", {"category": "a"}, "2", id="art2"),
        pytest.param("worker.death", {"category": "a", "employer.region": "TJ-DU"}, "15.1", id="art15.1"),
        pytest.param("worker.death", {"category": "b"}, "15.2", id="art15.2"),
        pytest.param("worker.death", {"responsible_party": "host_state_customer"}, "15.3", id="art15.3"),
        pytest.param("worker.death", {"compensation_office": None}, "15.4", id="art15.4-no-office"),
        pytest.param("worker.death", {"work_related": False}, "15.4", id="art15.4-office-not-work-related"),
        pytest.param(
            "worker.death", {"compensation_office.located_in": "RU"}, "15.4", id="art15.4-wrong-country"
        ),
    ],
)
def test_each_rule_of_the_agreement_fails_with_its_article(
    message_type: str,
    edits: dict[str, Any],
    article: str,
    dev_pki: KeyStore,
    sent_at: datetime,
    trust: TrustStore,
    agreement: Agreement,
) -> None:
    sealed = _seal_edited_payload(dev_pki, message_type, edits, sent_at)

    error = _reason_of(sealed.raw, trust, agreement)

    assert isinstance(error, ValidationError)
    assert error.reason is Reason.AGREEMENT_RULE
    assert error.article == article
    assert f"Art. {article}:" in error.diagnostic


# --- bytes that are not a canonical envelope ---------------------------------------------------


def _death_raw(sealed_samples: dict[str, SealedMessage]) -> bytes:
    return sealed_samples["worker.death"].raw


@pytest.mark.parametrize(
    "rewrite",
    [
        pytest.param(
            lambda raw: json.dumps(json.loads(raw), indent=1, ensure_ascii=False).encode(), id="indented"
        ),
        pytest.param(lambda raw: raw + b"\n", id="trailing-newline"),
        pytest.param(lambda raw: b" " + raw, id="leading-space"),
        pytest.param(lambda raw: raw.replace(b'":', b'": ', 1), id="one-space"),
        pytest.param(
            lambda raw: json.dumps(
                dict(reversed(json.loads(raw).items())), separators=(",", ":"), ensure_ascii=False
            ).encode(),
            id="reordered-keys",
        ),
        pytest.param(
            lambda raw: json.dumps(json.loads(raw), separators=(",", ":")).encode(), id="escaped-unicode"
        ),
        pytest.param(lambda raw: raw.replace(b'"version":1', b'"version":1.0'), id="number-spelling"),
    ],
)
def test_non_canonical_bytes_are_malformed(
    rewrite: Callable[[bytes], bytes],
    sealed_samples: dict[str, SealedMessage],
    trust: TrustStore,
    agreement: Agreement,
) -> None:
    raw = _death_raw(sealed_samples)
    rewritten = rewrite(raw)
    assert rewritten != raw
    assert json.loads(rewritten) == json.loads(raw)  # same data, other bytes
    assert _reason_of(rewritten, trust, agreement).reason is Reason.MESSAGE_MALFORMED


@pytest.mark.parametrize(
    "rewrite",
    [
        pytest.param(
            lambda raw: raw.replace(
                b'{"correlation_id":null', b'{"correlation_id":null,"correlation_id":null', 1
            ),
            id="duplicate-key",
        ),
        pytest.param(
            lambda raw: raw.replace(b'"recipient":"TJ-MOL"', b'"recipient":"TJ-MOL","recipient":"TJ-MVD"'),
            id="duplicate-recipient",
        ),
        pytest.param(lambda raw: raw.replace(b'"version":1', b'"version":NaN'), id="nan"),
        pytest.param(lambda raw: raw.replace(b'"version":1', b'"version":Infinity'), id="infinity"),
        pytest.param(
            lambda raw: raw.replace(b'"correlation_id":null', b'"correlation_id":' + b"[" * 33 + b"]" * 33),
            id="depth-33",
        ),
        pytest.param(lambda raw: raw.replace("Москва".encode(), b"\xff\xfe", 1), id="invalid-utf8"),
        pytest.param(lambda raw: raw.replace("Москва".encode(), b"\xc0\xaf", 1), id="overlong-utf8"),
        pytest.param(lambda raw: raw.replace("Москва".encode(), b"\xed\xa0\x80", 1), id="encoded-surrogate"),
        pytest.param(lambda raw: b"\xef\xbb\xbf" + raw, id="byte-order-mark"),
        pytest.param(lambda raw: raw[:-1], id="truncated"),
        pytest.param(lambda raw: b"[" + raw + b"]", id="array"),
        pytest.param(lambda raw: b"", id="empty"),
    ],
)
def test_hostile_json_is_malformed(
    rewrite: Callable[[bytes], bytes],
    sealed_samples: dict[str, SealedMessage],
    trust: TrustStore,
    agreement: Agreement,
) -> None:
    raw = _death_raw(sealed_samples)
    rewritten = rewrite(raw)
    assert rewritten != raw
    assert _reason_of(rewritten, trust, agreement).reason is Reason.MESSAGE_MALFORMED


def test_oversized_messages_are_refused_before_parsing(
    sealed_samples: dict[str, SealedMessage], trust: TrustStore, agreement: Agreement
) -> None:
    raw = _death_raw(sealed_samples)
    _open(raw, trust, agreement, max_bytes=len(raw))
    assert _reason_of(raw, trust, agreement, max_bytes=len(raw) - 1).reason is Reason.MESSAGE_OVERSIZED
    # Past the default limit even bytes that are not JSON at all are refused for their size.
    assert _reason_of(b"\xff" * (MAX_MESSAGE_BYTES + 1), trust, agreement).reason is Reason.MESSAGE_OVERSIZED


def test_message_for_another_countrys_authority_is_the_wrong_recipient(
    sealed_samples: dict[str, SealedMessage], trust: TrustStore, agreement: Agreement
) -> None:
    raw = _death_raw(sealed_samples)  # RU-MVD to TJ-MOL
    _open(raw, trust, agreement, local_country="TJ")
    assert _reason_of(raw, trust, agreement, local_country="RU").reason is Reason.POLICY_WRONG_RECIPIENT


# --- freshness ---------------------------------------------------------------------------------


def test_freshness_window(sealed_samples: dict[str, SealedMessage], sent_at: datetime) -> None:
    envelope = sealed_samples["worker.death"].envelope
    window = {"max_age": timedelta(days=7), "max_skew": timedelta(minutes=5)}

    check_freshness(envelope, now=sent_at, **window)
    check_freshness(envelope, now=sent_at + timedelta(days=7), **window)
    check_freshness(envelope, now=sent_at - timedelta(minutes=5), **window)
    for now in (sent_at + timedelta(days=7, seconds=1), sent_at - timedelta(minutes=5, seconds=1)):
        with pytest.raises(ReplayError) as info:
            check_freshness(envelope, now=now, **window)
        assert info.value.reason is Reason.REPLAY_STALE


def test_every_failure_is_a_remote_error_subclass_with_a_sentence(
    sealed_samples: dict[str, SealedMessage], trust: TrustStore, agreement: Agreement
) -> None:
    error = _reason_of(_death_raw(sealed_samples)[:-1], trust, agreement)
    assert isinstance(error, VerificationError)
    assert error.diagnostic
    assert error.as_dict()["reason"] == "message.malformed"


def test_created_at_is_kept_to_the_microsecond_in_utc(
    dev_pki: KeyStore, pki_now: datetime, trust: TrustStore, agreement: Agreement
) -> None:
    moment = datetime(2025, 1, 4, 0, 0, 0, 123456, tzinfo=UTC)
    assert pki_now < moment < pki_now + timedelta(days=365)  # inside the session certificates
    sealed = _seal_sample(dev_pki, "receipt", created_at=moment)
    opened = open_message(sealed.raw, trust=trust, agreement=agreement)
    assert opened.envelope.created_at == moment
    assert b'"created_at":"2025-01-04T00:00:00.123456Z"' in sealed.raw


def test_a_header_checked_before_does_not_vouch_for_another_signature(
    dev_pki: KeyStore, sent_at: datetime, trust: TrustStore, agreement: Agreement
) -> None:
    # The protected header's checks are remembered per header (one per signing chain); the
    # signature under it is still checked on every message.
    document, signer = _unsigned_death(dev_pki, sent_at)
    header = _header_for(signer.chain)
    _open(_forge(document, header=header, sign=signer.private_key.sign), trust, agreement)
    attacker = Ed25519PrivateKey.generate()
    for _ in range(2):
        forged = _forge(document, header=header, sign=attacker.sign)
        assert _reason_of(forged, trust, agreement).reason is Reason.SIGNATURE_INVALID
    # A header refused once is refused again, not remembered as good.
    bad = {**header, "jku": "https://attacker.example/keys"}
    for _ in range(2):
        forged = _forge(document, header=bad, sign=signer.private_key.sign)
        assert _reason_of(forged, trust, agreement).reason is Reason.SIGNATURE_INVALID
