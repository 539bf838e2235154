"""The certificate profile that broker.core.trust relies on: built exactly, refused when inconsistent."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.x509.oid import NameOID

from broker.core.errors import ConfigError, Reason
from broker.core.pki import (
    CertificateUsage,
    authority_country,
    build_crl,
    certificate_thumbprint,
    create_ca,
    cross_sign,
    issue_authority_certificate,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
YEAR = timedelta(days=365)


def _ca(country: str = "TJ") -> tuple[Ed25519PrivateKey, x509.Certificate]:
    return create_ca(country=country, not_before=T0, not_after=T0 + 10 * YEAR)


def _issue(
    ca: tuple[Ed25519PrivateKey, x509.Certificate], authority_id: str = "TJ-MOL", country: str = "TJ"
) -> x509.Certificate:
    ca_key, ca_cert = ca
    return issue_authority_certificate(
        ca_key=ca_key,
        ca_cert=ca_cert,
        authority_id=authority_id,
        country=country,
        public_key=Ed25519PrivateKey.generate().public_key(),
        not_before=T0,
        not_after=T0 + YEAR,
        display_name="Ministry of Labour, Migration and Employment",
    )


def test_ca_is_self_signed_path_length_zero_and_signs_only_certs_and_crls() -> None:
    key, cert = _ca("RU")
    cert.verify_directly_issued_by(cert)
    assert cert.subject.rfc4514_string() == "CN=RU Labour Exchange CA,C=RU"
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    assert not usage.digital_signature
    assert cert.public_key() == key.public_key()
    assert cert.not_valid_before_utc == T0


def test_create_ca_keeps_a_given_key() -> None:
    key = Ed25519PrivateKey.generate()
    returned, cert = create_ca(country="TJ", not_before=T0, not_after=T0 + YEAR, private_key=key)
    assert returned is key
    assert cert.public_key() == key.public_key()


def test_authority_certificate_names_the_authority_and_may_only_sign() -> None:
    ca = _ca()
    cert = _issue(ca)
    cert.verify_directly_issued_by(ca[1])
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "TJ-MOL"
    assert cert.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "TJ"
    organisation = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
    assert organisation == "Ministry of Labour, Migration and Employment"
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_cert_sign
    assert not usage.value.key_agreement
    assert isinstance(cert.public_key(), Ed25519PublicKey)
    ca_ski = ca[1].extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest


def _x25519_certificate(**usage: CertificateUsage) -> x509.Certificate:
    """A year's TJ-GW certificate for a fresh X25519 key, of the usage given (default: signing)."""
    ca_key, ca_cert = _ca()
    return issue_authority_certificate(
        ca_key=ca_key,
        ca_cert=ca_cert,
        authority_id="TJ-GW",
        country="TJ",
        public_key=X25519PrivateKey.generate().public_key(),
        not_before=T0,
        not_after=T0 + YEAR,
        **usage,
    )


def test_key_agreement_certificate_holds_an_x25519_key() -> None:
    cert = _x25519_certificate(usage=CertificateUsage.KEY_AGREEMENT)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_agreement
    assert not usage.digital_signature


def test_signing_certificate_refuses_a_non_ed25519_key() -> None:
    with pytest.raises(ConfigError) as caught:
        _x25519_certificate()
    assert caught.value.reason is Reason.CONFIG_INVALID


@pytest.mark.parametrize(
    ("authority_id", "country", "ca_country"),
    [
        ("RU-MVD", "TJ", "TJ"),  # id of another country
        ("TJ-MOL", "TJ", "RU"),  # the RU CA cannot certify a TJ authority
        ("tj-mol", "TJ", "TJ"),  # not an authority id
        ("TJ", "TJ", "TJ"),
    ],
)
def test_issue_refuses_inconsistent_names(authority_id: str, country: str, ca_country: str) -> None:
    with pytest.raises(ConfigError):
        _issue(_ca(ca_country), authority_id, country)


def test_times_must_be_aware_and_ordered() -> None:
    with pytest.raises(ConfigError):
        create_ca(country="TJ", not_before=datetime(2026, 1, 1), not_after=datetime(2027, 1, 1))
    with pytest.raises(ConfigError):
        create_ca(country="TJ", not_before=T0, not_after=T0)
    with pytest.raises(ConfigError):
        create_ca(country="Tajikistan", not_before=T0, not_after=T0 + YEAR)


def test_crl_lists_serials_with_their_revocation_times_and_is_signed_by_the_ca() -> None:
    ca_key, ca_cert = _ca()
    revoked_at = T0 + timedelta(days=30)
    crl = build_crl(
        ca_key=ca_key,
        ca_cert=ca_cert,
        revoked=[(1234, revoked_at), (99, T0)],
        this_update=revoked_at,
        next_update=revoked_at + timedelta(days=7),
        crl_number=5,
    )
    assert crl.is_signature_valid(ca_key.public_key())
    assert not crl.is_signature_valid(Ed25519PrivateKey.generate().public_key())
    assert crl.issuer == ca_cert.subject
    entry = crl.get_revoked_certificate_by_serial_number(1234)
    assert entry is not None
    assert entry.revocation_date_utc == revoked_at
    assert crl.get_revoked_certificate_by_serial_number(5) is None
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 5


def test_cross_signed_certificate_carries_the_new_ca_key_under_the_old_ca() -> None:
    old_key, old_cert = _ca()
    new_key, new_cert = create_ca(country="TJ", not_before=T0 + YEAR, not_after=T0 + 11 * YEAR)
    cross = cross_sign(
        old_ca_key=old_key,
        old_ca_cert=old_cert,
        new_ca_cert=new_cert,
        not_before=T0 + YEAR,
        not_after=T0 + 2 * YEAR,
    )
    cross.verify_directly_issued_by(old_cert)
    assert cross.public_key() == new_key.public_key()
    assert cross.subject == new_cert.subject
    assert cross.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    with pytest.raises(ConfigError):
        cross_sign(
            old_ca_key=old_key,
            old_ca_cert=old_cert,
            new_ca_cert=_ca("RU")[1],
            not_before=T0,
            not_after=T0 + YEAR,
        )


def test_thumbprint_is_unpadded_base64url_sha256_of_der() -> None:
    cert = _issue(_ca())
    der = cert.public_bytes(serialization.Encoding.DER)
    expected = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")
    assert certificate_thumbprint(cert) == expected
    assert len(certificate_thumbprint(cert)) == 43


def test_authority_country_is_the_prefix() -> None:
    assert authority_country("TJ-CONSULATE-MOSCOW") == "TJ"
    assert authority_country("RU-GW") == "RU"
    with pytest.raises(ConfigError):
        authority_country("MOL")
