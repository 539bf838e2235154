"""Build and apply `trust.update` messages; the directory of key-agreement certificates they feed.

A peer's CA changes reach us as signed messages, so nobody carries bundles across the border. The
receiving gateway has already verified the envelope against what it trusts *now*; here each piece is
checked again on its own terms before anything changes:

- a new CA generation is accepted only with a cross-certificate issued by a CA we trust now, for
  the same subject and key (`pki.cross_sign`);
- a CRL only if a CA of that country (including one just added) signed it;
- an authority certificate only if it chains to that country's CA and is valid now.

Pure: the result is a new `TrustStore` and `EncryptionDirectory`; the gateway swaps them in.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from broker.core.catalogue.trust import CaRollover, TrustUpdate
from broker.core.errors import ConfigError, ExchangeError, Reason, VerificationError
from broker.core.pki import is_key_agreement_certificate
from broker.core.trust import TrustStore


def invalid(diagnostic: str) -> VerificationError:
    return VerificationError(Reason.TRUST_UPDATE_INVALID, diagnostic)


@dataclass(frozen=True)
class EncryptionDirectory:
    """Each authority's key-agreement certificates; `current` picks the newest one trusted at a moment."""

    certificates: Mapping[str, tuple[x509.Certificate, ...]] = field(default_factory=dict)

    @classmethod
    def of(
        cls, certificates: Iterable[x509.Certificate], *, trust: TrustStore, at: datetime
    ) -> EncryptionDirectory:
        """Start-up: the certificates that are trusted at `at`; expired or revoked ones are left out."""
        usable = []
        for cert in certificates:
            try:
                trust.verify_key_agreement(cert, at=at)
            except VerificationError:
                continue
            usable.append(cert)
        return cls().with_certificates(usable, trust=trust, at=at)

    def with_certificates(
        self, certificates: Iterable[x509.Certificate], *, trust: TrustStore, at: datetime
    ) -> EncryptionDirectory:
        """A directory that also holds `certificates`, each checked against `trust` at `at`."""
        merged = {holder: list(certs) for holder, certs in self.certificates.items()}
        for cert in certificates:
            holder = trust.verify_key_agreement(cert, at=at).authority_id
            if cert not in merged.setdefault(holder, []):
                merged[holder].append(cert)
        return EncryptionDirectory(certificates={holder: tuple(certs) for holder, certs in merged.items()})

    def current(self, authority_id: str, *, trust: TrustStore, at: datetime) -> x509.Certificate:
        """The newest certificate of `authority_id` that is valid and unrevoked at `at`."""
        usable: list[x509.Certificate] = []
        for cert in self.certificates.get(authority_id, ()):
            try:
                trust.verify_key_agreement(cert, at=at)
            except VerificationError:
                continue
            usable.append(cert)
        if not usable:
            raise ConfigError(
                Reason.KEY_MISSING,
                f"no trusted key-agreement certificate of {authority_id} at {at.isoformat()}",
            )
        return max(usable, key=lambda cert: (cert.not_valid_before_utc, cert.serial_number))


@dataclass(frozen=True)
class TrustChange:
    """What applying an update produced, and a summary for the log."""

    trust: TrustStore
    directory: EncryptionDirectory
    new_anchors: int
    crl_number: int | None
    authority_certificates: int
    key_agreement: tuple[x509.Certificate, ...] = ()  # the new key-agreement certificates themselves


def _b64(der: bytes) -> str:
    return base64.b64encode(der).decode("ascii")


def build_trust_update(
    country: str,
    *,
    authority_certificates: Sequence[x509.Certificate] = (),
    ca_rollovers: Sequence[tuple[x509.Certificate, x509.Certificate]] = (),
    crl: x509.CertificateRevocationList | None = None,
) -> TrustUpdate:
    """`ca_rollovers` pairs each new self-signed CA certificate with its cross-certificate."""
    der = serialization.Encoding.DER
    return TrustUpdate(
        country=country,
        ca_rollovers=tuple(
            CaRollover(
                certificate=_b64(new.public_bytes(der)), cross_certificate=_b64(cross.public_bytes(der))
            )
            for new, cross in ca_rollovers
        ),
        authority_certificates=tuple(_b64(cert.public_bytes(der)) for cert in authority_certificates),
        crl=None if crl is None else _b64(crl.public_bytes(der)),
    )


def apply_trust_update(
    update: TrustUpdate,
    *,
    signer_country: str,
    trust: TrustStore,
    directory: EncryptionDirectory,
    at: datetime,
) -> TrustChange:
    """Check every piece of `update` (signed by a CA authority of `signer_country`) and apply it."""
    country = update.country
    if country != signer_country:
        raise invalid(f"an authority of {signer_country} cannot update the trust material of {country}")
    try:
        new_anchors = [_check_rollover(rollover, country, trust, at) for rollover in update.ca_rollovers]
        if new_anchors:
            trust = trust.with_anchors(country, new_anchors)
        crl_number: int | None = None
        if update.crl is not None:
            crl = _crl(update.crl)
            trust = trust.with_crl(country, crl)
            crl_number = _crl_number(crl)
        certificates = [_certificate(item, "authority certificate") for item in update.authority_certificates]
        agreeing = [cert for cert in certificates if is_key_agreement_certificate(cert)]
        for cert in certificates:
            identity = (
                trust.verify_key_agreement(cert, at=at)
                if cert in agreeing
                else trust.verify_signer([cert], at=at)
            )
            if identity.country != country:
                raise invalid(f"{identity.authority_id} does not belong to {country}")
        directory = directory.with_certificates(agreeing, trust=trust, at=at)
    except ExchangeError as error:
        if error.reason is Reason.TRUST_UPDATE_INVALID:
            raise
        raise invalid(f"{country}: {error.diagnostic}") from error
    return TrustChange(
        trust=trust,
        directory=directory,
        new_anchors=len(new_anchors),
        crl_number=crl_number,
        authority_certificates=len(certificates),
        key_agreement=tuple(agreeing),
    )


def _check_rollover(rollover: CaRollover, country: str, trust: TrustStore, at: datetime) -> x509.Certificate:
    new = _certificate(rollover.certificate, "CA certificate")
    cross = _certificate(rollover.cross_certificate, "cross-certificate")
    if cross.subject != new.subject or cross.public_key() != new.public_key():
        raise invalid("the cross-certificate does not certify the new CA's name and key")
    if not any(_issued_by(cross, anchor) for anchor in trust.anchors(country)):
        raise invalid(f"the new CA of {country} is not cross-signed by a CA of {country} we trust")
    if not cross.not_valid_before_utc <= at <= cross.not_valid_after_utc:
        raise invalid("the cross-certificate is not valid now")
    if not _issued_by(new, new):
        raise invalid("the new CA certificate is not self-signed")
    return new


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _crl_number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return None


def _der(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise invalid(f"the {what} is not base64") from None


def _certificate(text: str, what: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(_der(text, what))
    except ValueError as exc:
        raise invalid(f"the {what} is not a DER certificate: {exc}") from None


def _crl(text: str) -> x509.CertificateRevocationList:
    try:
        return x509.load_der_x509_crl(_der(text, "CRL"))
    except ValueError as exc:
        raise invalid(f"the CRL is not DER: {exc}") from None
