"""Each country's small certificate authority: build CA, authority and revocation material.

Pure: every time is passed in and nothing touches the disk (the key store does that). The profile is
deliberately narrow so the trust store can check it exactly: Ed25519 everywhere, one CA level
(path length 0), authority certificates that can only sign (or, later, only agree keys).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.x509.oid import NameOID

from broker.core.errors import ConfigError, Reason

_COUNTRY = re.compile(r"[A-Z]{2}")
_AUTHORITY_ID = re.compile(r"[A-Z]{2}(?:-[A-Z0-9]+)+")


class CertificateUsage(StrEnum):
    """What an authority certificate's key may do; one purpose per key."""

    SIGNING = "signing"
    KEY_AGREEMENT = "key_agreement"  # X25519 keys for encrypting personal data (a later issue)


@dataclass(frozen=True)
class Signer:
    """An authority's private key and the chain a peer needs to verify it (leaf first, then CA)."""

    authority_id: str
    private_key: Ed25519PrivateKey
    chain: tuple[x509.Certificate, ...]


def ca_common_name(country: str) -> str:
    return f"{country} Labour Exchange CA"


def check_country(country: str) -> str:
    if not _COUNTRY.fullmatch(country):
        raise ConfigError(Reason.CONFIG_INVALID, f"country {country!r} is not an ISO 3166 alpha-2 code")
    return country


def authority_country(authority_id: str) -> str:
    """The country an authority id belongs to: its prefix (`TJ-MOL` belongs to `TJ`)."""
    if not _AUTHORITY_ID.fullmatch(authority_id):
        raise ConfigError(
            Reason.CONFIG_INVALID,
            f"authority id {authority_id!r} does not look like <COUNTRY>-<NAME>, e.g. TJ-MOL",
        )
    return authority_id[:2]


def create_ca(
    *,
    country: str,
    not_before: datetime,
    not_after: datetime,
    private_key: Ed25519PrivateKey | None = None,
) -> tuple[Ed25519PrivateKey, x509.Certificate]:
    """A self-signed country CA that may sign authority certificates and CRLs, nothing below that."""
    check_country(country)
    _check_period(not_before, not_after)
    key = private_key or Ed25519PrivateKey.generate()
    name = _ca_name(country)
    public_key = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False)
        .sign(private_key=key, algorithm=None)
    )
    return key, cert


def issue_authority_certificate(
    *,
    ca_key: Ed25519PrivateKey,
    ca_cert: x509.Certificate,
    authority_id: str,
    country: str,
    public_key: Ed25519PublicKey | X25519PublicKey,
    not_before: datetime,
    not_after: datetime,
    display_name: str | None = None,
    usage: CertificateUsage = CertificateUsage.SIGNING,
) -> x509.Certificate:
    """An end-entity certificate naming the authority (CN) and its country (C)."""
    check_country(country)
    if authority_country(authority_id) != country:
        raise ConfigError(Reason.CONFIG_INVALID, f"authority {authority_id} does not belong to {country}")
    if country_of(ca_cert) != country:
        raise ConfigError(Reason.CONFIG_INVALID, f"the CA of {country_of(ca_cert)} cannot certify {country}")
    _check_period(not_before, not_after)
    expected_key = Ed25519PublicKey if usage is CertificateUsage.SIGNING else X25519PublicKey
    if not isinstance(public_key, expected_key):
        raise ConfigError(Reason.CONFIG_INVALID, f"a {usage} certificate needs a {expected_key.__name__}")
    attributes = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, country),
        x509.NameAttribute(NameOID.COMMON_NAME, authority_id),
    ]
    if display_name:
        attributes.insert(1, x509.NameAttribute(NameOID.ORGANIZATION_NAME, display_name))
    key_usage = (
        _key_usage(digital_signature=True)
        if usage is CertificateUsage.SIGNING
        else _key_usage(key_agreement=True)
    )
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attributes))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_id(ca_cert), critical=False)
        .sign(private_key=ca_key, algorithm=None)
    )


def build_crl(
    *,
    ca_key: Ed25519PrivateKey,
    ca_cert: x509.Certificate,
    revoked: Sequence[tuple[int, datetime]],
    this_update: datetime,
    next_update: datetime,
    crl_number: int = 1,
) -> x509.CertificateRevocationList:
    """A CRL listing (serial, revoked_at) pairs; the revocation time is what verifiers compare against."""
    _check_period(this_update, next_update)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(crl_number), critical=False)
        .add_extension(_authority_key_id(ca_cert), critical=False)
    )
    for serial, revoked_at in sorted(revoked):
        _check_aware(revoked_at)
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(revoked_at).build()
        )
    return builder.sign(private_key=ca_key, algorithm=None)


def cross_sign(
    *,
    old_ca_key: Ed25519PrivateKey,
    old_ca_cert: x509.Certificate,
    new_ca_cert: x509.Certificate,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    """The old CA vouching for the new CA's key, so a peer can accept a rotated CA it did not import.

    The result keeps the new CA's subject, key and constraints; only the issuer and signature change.
    """
    if country_of(old_ca_cert) != country_of(new_ca_cert):
        raise ConfigError(Reason.CONFIG_INVALID, "a CA can only cross-sign its own country's next CA")
    _check_period(not_before, not_after)
    builder = (
        x509.CertificateBuilder()
        .subject_name(new_ca_cert.subject)
        .issuer_name(old_ca_cert.subject)
        .public_key(new_ca_cert.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(_authority_key_id(old_ca_cert), critical=False)
    )
    for extension in new_ca_cert.extensions:
        if not isinstance(extension.value, x509.AuthorityKeyIdentifier):
            builder = builder.add_extension(extension.value, critical=extension.critical)
    return builder.sign(private_key=old_ca_key, algorithm=None)


@lru_cache(maxsize=1024)  # computed on every message for the same few certificates
def certificate_thumbprint(cert: x509.Certificate) -> str:
    """base64url (no padding) SHA-256 of the DER certificate: the JWS `kid` and `x5t#S256`."""
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def is_key_agreement_certificate(cert: x509.Certificate) -> bool:
    """Whether `cert` certifies a key-agreement key (personal data is sealed to it), not a signing key."""
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_agreement
    except (x509.ExtensionNotFound, ValueError):
        return False


def is_ca_certificate(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (x509.ExtensionNotFound, ValueError):
        return False


def country_of(cert: x509.Certificate) -> str | None:
    """The subject's C attribute, or None when it is missing or repeated."""
    return _single_attribute(cert.subject, NameOID.COUNTRY_NAME)


def common_name_of(cert: x509.Certificate) -> str | None:
    return _single_attribute(cert.subject, NameOID.COMMON_NAME)


def display_name_of(cert: x509.Certificate) -> str | None:
    return _single_attribute(cert.subject, NameOID.ORGANIZATION_NAME)


def _single_attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = name.get_attributes_for_oid(oid)
    if len(values) != 1 or not isinstance(values[0].value, str):
        return None
    return values[0].value


def _ca_name(country: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, country),
            x509.NameAttribute(NameOID.COMMON_NAME, ca_common_name(country)),
        ]
    )


def _authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        raise ConfigError(Reason.CONFIG_INVALID, "CA certificate has no subject key identifier") from None
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _key_usage(
    *,
    digital_signature: bool = False,
    key_agreement: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=key_agreement,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _check_period(start: datetime, end: datetime) -> None:
    _check_aware(start)
    _check_aware(end)
    if end <= start:
        raise ConfigError(Reason.CONFIG_INVALID, f"validity ends ({end}) before it starts ({start})")


def _check_aware(moment: datetime) -> None:
    # A naive datetime would be read as local time by some code and UTC by other code.
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ConfigError(Reason.CONFIG_INVALID, f"time {moment} has no time zone")
