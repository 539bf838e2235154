"""Generate the hostile envelopes of tests/attacks/ (run once; the outputs are committed).

    .venv/bin/python tests/attacks/make_assets.py

Each attack is a file of exact wire bytes under `envelopes/`, listed in `index.json` with the reason
code `open_message` must answer (null: the control cases that must open). A throwaway PKI is built in
memory with certificates valid 2026-2046; only the CA certificates and CRLs are written (`ca/`), the
private keys are discarded, so the assets cannot be re-signed and stay valid evidence for 20 years.
Re-running replaces every asset with freshly keyed ones.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from broker.core.agreement import load_agreement
from broker.core.canonical import canonical_bytes
from broker.core.catalogue import payload_to_json, sample_payloads
from broker.core.envelope import Envelope
from broker.core.ids import uuid7
from broker.core.jws import ALGORITHM, TYP, b64url
from broker.core.pki import Signer, build_crl, certificate_thumbprint, create_ca, issue_authority_certificate
from broker.core.sealing import seal_envelope

HERE = Path(__file__).resolve().parent
VALID_FROM = datetime(2026, 1, 1, tzinfo=UTC)
VALID_UNTIL = datetime(2046, 1, 1, tzinfo=UTC)
CREATED_AT = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
REVOKED_AT = datetime(2026, 5, 1, tzinfo=UTC)
LOCAL_COUNTRY = "TJ"  # every asset is opened by the Tajik gateway


class Pki:
    """Both countries' CAs and one signer per authority, plus the odd certificates the attacks need."""

    def __init__(self) -> None:
        agreement = load_agreement()
        self.ca: dict[str, tuple[Ed25519PrivateKey, x509.Certificate]] = {
            country: create_ca(country=country, not_before=VALID_FROM, not_after=VALID_UNTIL)
            for country in agreement.countries
        }
        self.signers = {
            authority.id: self.signer(authority.id, VALID_FROM, VALID_UNTIL)
            for authority in agreement.authorities
        }
        self.expired = self.signer("RU-MVD", VALID_FROM, datetime(2026, 3, 1, tzinfo=UTC))
        self.not_yet_valid = self.signer("RU-MVD", datetime(2027, 1, 1, tzinfo=UTC), VALID_UNTIL)
        self.revoked = self.signer("RU-MVD", VALID_FROM, VALID_UNTIL)
        ru_key, ru_cert = self.ca["RU"]
        self.crls = {
            "RU": build_crl(
                ca_key=ru_key,
                ca_cert=ru_cert,
                revoked=[(self.revoked.chain[0].serial_number, REVOKED_AT)],
                this_update=REVOKED_AT,
                next_update=VALID_UNTIL,
            ),
            "TJ": build_crl(
                ca_key=self.ca["TJ"][0],
                ca_cert=self.ca["TJ"][1],
                revoked=[],
                this_update=VALID_FROM,
                next_update=VALID_UNTIL,
            ),
        }

    def signer(self, authority_id: str, start: datetime, end: datetime) -> Signer:
        country = authority_id[:2]
        ca_key, ca_cert = self.ca[country]
        key = Ed25519PrivateKey.generate()
        cert = issue_authority_certificate(
            ca_key=ca_key,
            ca_cert=ca_cert,
            authority_id=authority_id,
            country=country,
            public_key=key.public_key(),
            not_before=start,
            not_after=end,
        )
        return Signer(authority_id=authority_id, private_key=key, chain=(cert, ca_cert))


def envelope_document(
    message_type: str,
    sender: str,
    recipient: str,
    *,
    payload_edits: Mapping[str, Any] | None = None,
    created_at: datetime = CREATED_AT,
) -> dict[str, Any]:
    payload = payload_to_json(sample_payloads()[message_type])
    for dotted, value in (payload_edits or {}).items():
        *parents, last = dotted.split(".")
        target: Any = payload
        for part in parents:
            target = target[part]
        target[last] = value
    return {
        "id": str(uuid7(unix_ms=int(created_at.timestamp() * 1000))),
        "type": message_type,
        "version": 1,
        "sender": sender,
        "recipient": recipient,
        "created_at": created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "correlation_id": None,
        "payload": payload,
    }


def header_for(chain: tuple[x509.Certificate, ...], **overrides: Any) -> dict[str, Any]:
    der = [cert.public_bytes(serialization.Encoding.DER) for cert in chain]
    header = {
        "alg": ALGORITHM,
        "kid": certificate_thumbprint(chain[0]),
        "typ": TYP,
        "x5c": [base64.b64encode(item).decode("ascii") for item in der],
    }
    return {**header, **overrides}


def forge(document: Mapping[str, Any], header: Mapping[str, Any], sign: Callable[[bytes], bytes]) -> bytes:
    """Wire bytes with an arbitrary JWS header and signing function (the attacker's view)."""
    protected = b64url(canonical_bytes(dict(header)))
    signing_input = f"{protected}.{b64url(canonical_bytes(dict(document)))}".encode("ascii")
    return canonical_bytes({**document, "signature": f"{protected}..{b64url(sign(signing_input))}"})


def sealed(signer: Signer, document: Mapping[str, Any]) -> bytes:
    """Honestly signed bytes, through the production code path."""
    return seal_envelope(Envelope.model_validate_json(canonical_bytes(dict(document))), signer=signer).raw


def self_signed_leaf(key: Ed25519PrivateKey, authority_id: str) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, authority_id[:2]),
            x509.NameAttribute(NameOID.COMMON_NAME, authority_id),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(VALID_FROM)
        .not_valid_after(VALID_UNTIL)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(private_key=key, algorithm=None)
    )


def foreign_authority_certificate(pki: Pki, key: Ed25519PrivateKey) -> x509.Certificate:
    """The RU CA certifying `CN=TJ-MOL, C=RU`: what a rogue or compromised peer CA could issue."""
    ca_key, ca_cert = pki.ca["RU"]
    name = x509.Name(
        [x509.NameAttribute(NameOID.COUNTRY_NAME, "RU"), x509.NameAttribute(NameOID.COMMON_NAME, "TJ-MOL")]
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
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(VALID_FROM)
        .not_valid_after(VALID_UNTIL)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .sign(private_key=ca_key, algorithm=None)
    )


def build_cases(pki: Pki) -> dict[str, tuple[bytes, str | None, str]]:
    """name → (wire bytes, expected reason or None, what the attack is)."""
    mvd = pki.signers["RU-MVD"]
    death = envelope_document("worker.death", "RU-MVD", "TJ-MOL")
    good = sealed(mvd, death)
    good_json = json.loads(good)
    signature: str = good_json["signature"]
    public_raw = (
        mvd.chain[0].public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    attacker = Ed25519PrivateKey.generate()
    attacker_ca_key, attacker_ca = create_ca(country="RU", not_before=VALID_FROM, not_after=VALID_UNTIL)
    attacker_leaf = issue_authority_certificate(
        ca_key=attacker_ca_key,
        ca_cert=attacker_ca,
        authority_id="RU-MVD",
        country="RU",
        public_key=attacker.public_key(),
        not_before=VALID_FROM,
        not_after=VALID_UNTIL,
    )
    ru_ca_key, ru_ca = pki.ca["RU"]
    foreign = foreign_authority_certificate(pki, attacker)
    x = b64url(attacker.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    last = signature[-1]
    sloppy_last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    sloppy_signature = signature[:-1] + sloppy_last[sloppy_last.index(last) ^ 1]  # flips an unused bit
    moscow = "Москва".encode()

    return {
        "valid-worker-death": (good, None, "control: an honest death notification"),
        "valid-signed-before-revocation": (
            sealed(
                pki.revoked,
                envelope_document("worker.death", "RU-MVD", "TJ-MOL", created_at=REVOKED_AT.replace(month=4)),
            ),
            None,
            "control: a certificate revoked later still proves what it signed before",
        ),
        "alg-none": (
            forge(death, header_for(mvd.chain, alg="none"), lambda _: b""),
            "signature.algorithm",
            "unsigned JWS claiming alg none",
        ),
        "alg-eddsa": (
            forge(death, header_for(mvd.chain, alg="EdDSA"), mvd.private_key.sign),
            "signature.algorithm",
            "valid Ed25519 signature under the deprecated polymorphic EdDSA name",
        ),
        "alg-hs256-public-key-as-secret": (
            forge(
                death,
                header_for(mvd.chain, alg="HS256"),
                lambda data: hmac.new(public_raw, data, hashlib.sha256).digest(),
            ),
            "signature.algorithm",
            "key confusion: HMAC keyed with the signer's public key",
        ),
        "signature-stripped": (
            canonical_bytes({k: v for k, v in good_json.items() if k != "signature"}),
            "signature.missing",
            "signature member removed",
        ),
        "crit-header": (
            forge(death, header_for(mvd.chain, crit=["exp"], exp=1), mvd.private_key.sign),
            "signature.invalid",
            "a crit header member the verifier would have to understand",
        ),
        "unencoded-payload-b64-false": (
            forge(death, header_for(mvd.chain, crit=["b64"], b64=False), mvd.private_key.sign),
            "signature.invalid",
            "RFC 7797 b64=false changes what the signature covers",
        ),
        "embedded-jwk": (
            forge(death, header_for(mvd.chain, jwk={"kty": "OKP", "crv": "Ed25519", "x": x}), attacker.sign),
            "signature.invalid",
            "attacker's key offered in a jwk header",
        ),
        "x5c-key-substitution": (
            forge(death, header_for(mvd.chain), attacker.sign),
            "signature.invalid",
            "genuine RU-MVD chain in x5c, signature made with another key",
        ),
        "payload-tampered": (
            canonical_bytes(
                {**good_json, "payload": {**good_json["payload"], "date_of_death": "2025-01-18"}}
            ),
            "signature.invalid",
            "date of death edited after signing",
        ),
        "recipient-tampered": (
            canonical_bytes({**good_json, "recipient": "TJ-CONSULATE-MOSCOW"}),
            "signature.invalid",
            "recipient redirected after signing",
        ),
        "signature-unused-bits": (
            canonical_bytes({**good_json, "signature": sloppy_signature}),
            "message.malformed",
            "same signature bytes, other base64url spelling (malleable message hash)",
        ),
        "expired-certificate": (sealed(pki.expired, death), "cert.expired", "certificate ended 2026-03-01"),
        "not-yet-valid-certificate": (
            sealed(pki.not_yet_valid, death),
            "cert.not_yet_valid",
            "certificate starts 2027-01-01",
        ),
        "revoked-certificate": (
            sealed(pki.revoked, death),
            "cert.revoked",
            "revoked 2026-05-01, message 2026-06-01",
        ),
        "attacker-ca-same-name": (
            sealed(
                Signer(authority_id="RU-MVD", private_key=attacker, chain=(attacker_leaf, attacker_ca)), death
            ),
            "cert.untrusted",
            "a CA named like the RU CA, with another key",
        ),
        "self-signed-leaf": (
            sealed(
                Signer(
                    authority_id="RU-MVD",
                    private_key=attacker,
                    chain=(self_signed_leaf(attacker, "RU-MVD"), ru_ca),
                ),
                death,
            ),
            "cert.untrusted",
            "self-signed RU-MVD certificate with the real RU CA as a hint",
        ),
        "ca-key-signs-message": (
            sealed(Signer(authority_id="RU-MVD", private_key=ru_ca_key, chain=(ru_ca,)), death),
            "cert.usage",
            "the CA's own key and certificate used to sign a message",
        ),
        "peer-ca-certifies-our-authority": (
            sealed(
                Signer(authority_id="TJ-MOL", private_key=attacker, chain=(foreign, ru_ca)),
                envelope_document("legislation.change", "TJ-MOL", "RU-MVD"),
            ),
            "cert.authority_mismatch",
            "RU CA issuing a certificate for TJ-MOL",
        ),
        "signed-by-other-authority": (
            sealed(pki.signers["RU-MINTRUD"], death),
            "cert.authority_mismatch",
            "RU-MINTRUD's key, sender says RU-MVD",
        ),
        "sender-not-allowed": (
            sealed(pki.signers["RU-MINTRUD"], envelope_document("worker.death", "RU-MINTRUD", "TJ-MOL")),
            "policy.sender_not_allowed",
            "RU-MINTRUD may not send worker.death (Art. 15.5: interior bodies)",
        ),
        "wrong-recipient": (
            sealed(pki.signers["TJ-MOL"], envelope_document("legislation.change", "TJ-MOL", "RU-MINTRUD")),
            "policy.wrong_recipient",
            "a message for Russia delivered to the Tajik gateway",
        ),
        "unknown-version": (
            sealed(mvd, {**death, "version": 9}),
            "schema.unknown_type",
            "worker.death version 9",
        ),
        "payload-extra-field": (
            sealed(mvd, {**death, "payload": {**death["payload"], "cause_of_death": "n/a"}}),
            "schema.invalid",
            "a field the model does not define",
        ),
        "agreement-art10-minor": (
            sealed(
                mvd,
                envelope_document(
                    "worker.death", "RU-MVD", "TJ-MOL", payload_edits={"worker.date_of_birth": "2010-01-01"}
                ),
            ),
            "agreement.rule",
            "Art. 10: the worker was 15",
        ),
        "agreement-art14-deadline": (
            sealed(
                mvd,
                envelope_document(
                    "work_permit.cancellation",
                    "RU-MVD",
                    "TJ-MOL",
                    payload_edits={"departure_deadline": "2025-03-10"},
                ),
            ),
            "agreement.rule",
            "Art. 14: departure deadline 28 days after the decision",
        ),
        "non-canonical-whitespace": (
            json.dumps(good_json, indent=2, ensure_ascii=False).encode("utf-8"),
            "message.malformed",
            "same JSON, pretty-printed",
        ),
        "duplicate-recipient": (
            good.replace(b'"recipient":"TJ-MOL"', b'"recipient":"TJ-MOL","recipient":"TJ-MVD"'),
            "message.malformed",
            "two recipients: parsers disagree which one counts",
        ),
        "nan-version": (good.replace(b'"version":1', b'"version":NaN'), "message.malformed", "NaN literal"),
        "deep-nesting": (
            good.replace(b'"correlation_id":null', b'"correlation_id":' + b"[" * 64 + b"]" * 64),
            "message.malformed",
            "arrays nested 64 deep",
        ),
        "not-utf8": (good.replace(moscow, b"\xc0\xaf", 1), "message.malformed", "overlong UTF-8 sequence"),
        "number-spelling": (
            good.replace(b'"version":1', b'"version":1.0'),
            "message.malformed",
            "1.0 where RFC 8785 writes 1",
        ),
    }


def write_assets(directory: Path = HERE) -> None:
    pki = Pki()
    ca_dir = directory / "ca"
    envelope_dir = directory / "envelopes"
    ca_dir.mkdir(exist_ok=True)
    envelope_dir.mkdir(exist_ok=True)
    for old in envelope_dir.glob("*.envelope"):
        old.unlink()
    for country, (_, cert) in pki.ca.items():
        (ca_dir / f"{country}.cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (ca_dir / f"{country}.crl.pem").write_bytes(
            pki.crls[country].public_bytes(serialization.Encoding.PEM)
        )
    index: dict[str, Any] = {
        "local_country": LOCAL_COUNTRY,
        "created_at": CREATED_AT.isoformat(),
        "cases": {},
    }
    for name, (raw, reason, attack) in sorted(build_cases(pki).items()):
        (envelope_dir / f"{name}.envelope").write_bytes(raw)
        index["cases"][f"{name}.envelope"] = {"reason": reason, "attack": attack}
    (directory / "index.json").write_text(
        json.dumps(index, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


if __name__ == "__main__":
    write_assets()
