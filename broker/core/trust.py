"""Decide whether a certificate chain names an authority we trust, at a given moment.

cryptography's Web-PKI verifier refuses Ed25519, so the chain is checked here step by step against
our narrow profile (see `broker.core.pki`). Only the configured anchors confer trust: CA certificates that
arrive inside a chain are ignored, so an attacker cannot bring their own CA.

Revocation is judged at the message time: a certificate revoked at T still verifies messages dated
before T. Auditors replaying an old log need exactly this; a gateway passes the message's arrival time.

A live decision (a gateway's, at arrival) also needs revocation information that is current: once the
newest CRL of a country is past its nextUpdate, the signer is flagged (`crl_stale_since`), and after
a grace period refused with `crl.stale` (docs/decisions.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from broker.core.errors import ConfigError, Reason, VerificationError
from broker.core.pki import authority_country, common_name_of, country_of

_NO_CRLS: Mapping[str, Sequence[x509.CertificateRevocationList]] = MappingProxyType({})


_ISSUER_CACHE_SIZE = 4096
# How long past its nextUpdate a country's newest CRL is still used, with a warning on every message.
DEFAULT_CRL_GRACE = timedelta(days=7)
T = TypeVar("T")


@dataclass(frozen=True)
class SignerIdentity:
    """Who signed: the authority named by a certificate that passed every check."""

    authority_id: str
    country: str
    certificate: x509.Certificate
    # When revocation was judged live against a CRL past its nextUpdate (within the grace period, or
    # for a trust update, which is how a fresh CRL arrives): that nextUpdate, for a loud warning.
    crl_stale_since: datetime | None = None


class TrustStore:
    """Per-country CA anchors (several during a CA rotation) and the CRLs they signed."""

    def __init__(
        self,
        *,
        anchors: Mapping[str, Sequence[x509.Certificate]],
        crls: Mapping[str, Sequence[x509.CertificateRevocationList]] = _NO_CRLS,
        crl_grace: timedelta = DEFAULT_CRL_GRACE,
    ) -> None:
        for country, certs in anchors.items():
            for cert in certs:
                _check_anchor(country, cert)
        self._anchors = {country: tuple(certs) for country, certs in anchors.items()}
        for country, country_crls in crls.items():
            for crl in country_crls:
                self._check_crl(country, crl)
        self._crls = {country: tuple(country_crls) for country, country_crls in crls.items()}
        self._crl_grace = crl_grace
        # A CRL without nextUpdate (RFC 5280 requires one) vouches for no moment after it was issued.
        self._revocation_known_until = {
            country: max(crl.next_update_utc or crl.last_update_utc for crl in country_crls)
            for country, country_crls in self._crls.items()
            if country_crls
        }
        self._issuers: dict[x509.Certificate, tuple[str, x509.Certificate]] = {}
        # What a certificate's own bytes say (usage, key type, subject) never changes either.
        self._signing_profiles: dict[x509.Certificate, str] = {}
        self._agreement_profiles: dict[x509.Certificate, str] = {}

    def with_anchors(self, country: str, certs: Sequence[x509.Certificate]) -> TrustStore:
        """A new store that also trusts `certs` for `country` (a rotated CA); the caller vouches for them."""
        anchors = dict(self._anchors)
        anchors[country] = (
            *anchors.get(country, ()),
            *(c for c in certs if c not in anchors.get(country, ())),
        )
        return TrustStore(anchors=anchors, crls=self._crls, crl_grace=self._crl_grace)

    @property
    def countries(self) -> frozenset[str]:
        return frozenset(self._anchors)

    def anchors(self, country: str) -> tuple[x509.Certificate, ...]:
        return self._anchors.get(country, ())

    def crls(self, country: str) -> tuple[x509.CertificateRevocationList, ...]:
        return self._crls.get(country, ())

    def with_crl(self, country: str, crl: x509.CertificateRevocationList) -> TrustStore:
        """A new store that also honours `crl`; refused unless one of `country`'s CAs signed it."""
        self._check_crl(country, crl)
        crls = dict(self._crls)
        crls[country] = (*crls.get(country, ()), crl)
        return TrustStore(anchors=self._anchors, crls=crls, crl_grace=self._crl_grace)

    @property
    def crl_grace(self) -> timedelta:
        return self._crl_grace

    def verify_signer(
        self,
        chain: Sequence[x509.Certificate],
        *,
        at: datetime,
        revocation_at: datetime | None = None,
        stale_crl_ok: bool = False,
    ) -> SignerIdentity:
        """Check the leaf (chain[0]) against our anchors at time `at`; later entries are ignored (only anchors confer trust).

        With `revocation_at` (a live decision) the country's CRL must also be current then, or within
        the grace period past its nextUpdate; `stale_crl_ok` waives the refusal, not the flag.
        """
        _require_time_zone(at)
        if not chain:
            raise VerificationError(Reason.CERT_MALFORMED, "the certificate chain is empty")
        # A live gateway judges revocation at arrival (`revocation_at`), so a stolen key cannot
        # backdate created_at past its revocation; an auditor replaying the log uses the message time.
        identity = self._verify_leaf(
            chain[0],
            at=at,
            revocation_at=revocation_at or at,
            what="the signer certificate",
            profiles=self._signing_profiles,
            check_usage=_check_signing_usage,
        )
        if revocation_at is None:
            return identity
        stale_since = self._crl_staleness(identity, revocation_at, refuse=not stale_crl_ok)
        return identity if stale_since is None else replace(identity, crl_stale_since=stale_since)

    def _crl_staleness(self, identity: SignerIdentity, at: datetime, *, refuse: bool) -> datetime | None:
        """The nextUpdate the country's newest CRL is past at `at`, None while it is current."""
        known_until = self._revocation_known_until.get(identity.country)
        if known_until is None or at <= known_until:
            return None
        if refuse and at > known_until + self._crl_grace:
            raise VerificationError(
                Reason.CRL_STALE,
                f"the newest {identity.country} CRL we hold was due to be replaced at "
                f"{known_until.isoformat()}; more than {self._crl_grace} later, the revocation of "
                f"{identity.authority_id}'s certificate cannot be judged",
            )
        return known_until

    def verify_key_agreement(self, cert: x509.Certificate, *, at: datetime) -> SignerIdentity:
        """Check a key-agreement (X25519) certificate as `verify_signer` checks a signer: before sealing to it."""
        _require_time_zone(at)
        return self._verify_leaf(
            cert,
            at=at,
            revocation_at=at,
            what="the key-agreement certificate",
            profiles=self._agreement_profiles,
            check_usage=_check_key_agreement_usage,
        )

    def check_issued(self, leaf: x509.Certificate) -> SignerIdentity:
        """That one of our anchors issued `leaf` to an authority of its own country, with a signing
        or key-agreement profile; validity and revocation are left out (a trust bundle carries the
        expired and revoked certificates of its authorities too)."""
        try:
            country, _ = self._find_issuer(leaf)
            usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
            if usage.key_agreement:
                _check_key_agreement_usage(leaf)
            else:
                _check_signing_usage(leaf)
            authority_id = _check_subject(leaf, country)
        except (x509.ExtensionNotFound, ValueError, TypeError) as exc:
            raise VerificationError(Reason.CERT_MALFORMED, f"unreadable certificate: {exc}") from exc
        return SignerIdentity(authority_id=authority_id, country=country, certificate=leaf)

    def _verify_leaf(
        self,
        leaf: x509.Certificate,
        *,
        at: datetime,
        revocation_at: datetime,
        what: str,
        profiles: dict[x509.Certificate, str],
        check_usage: Callable[[x509.Certificate], None],
    ) -> SignerIdentity:
        try:
            country, ca_cert = self._find_issuer(leaf)
            _check_validity(ca_cert, at, what=f"the {country} CA certificate")
            _check_validity(leaf, at, what=what)
            authority_id = profiles.get(leaf)
            if authority_id is None:  # usage and subject are the certificate's own: checked once
                check_usage(leaf)
                authority_id = _check_subject(leaf, country)
                _remember(profiles, leaf, authority_id)
            self._check_not_revoked(country, leaf, revocation_at)
        except (x509.ExtensionNotFound, ValueError, TypeError) as exc:  # what cryptography cannot parse
            raise VerificationError(Reason.CERT_MALFORMED, f"unreadable certificate: {exc}") from exc
        return SignerIdentity(authority_id=authority_id, country=country, certificate=leaf)

    def _find_issuer(self, leaf: x509.Certificate) -> tuple[str, x509.Certificate]:
        # The issuer's signature over a certificate never changes, so it is checked once per store;
        # validity, usage, subject and revocation are still checked on every message.
        known = self._issuers.get(leaf)
        if known is not None:
            return known
        found = self._search_issuer(leaf)
        _remember(self._issuers, leaf, found)
        return found

    def _search_issuer(self, leaf: x509.Certificate) -> tuple[str, x509.Certificate]:
        for country, certs in self._anchors.items():
            for ca_cert in certs:
                if leaf.issuer != ca_cert.subject:
                    continue
                try:
                    leaf.verify_directly_issued_by(ca_cert)
                except (InvalidSignature, ValueError, TypeError):
                    continue  # same name, other key: e.g. the previous CA of a rotation
                return country, ca_cert
        raise VerificationError(
            Reason.CERT_UNTRUSTED,
            f"certificate {leaf.subject.rfc4514_string()} was not issued by a trusted CA",
        )

    def _check_not_revoked(self, country: str, leaf: x509.Certificate, at: datetime) -> None:
        for crl in self._crls.get(country, ()):
            entry = crl.get_revoked_certificate_by_serial_number(leaf.serial_number)
            if entry is not None and entry.revocation_date_utc <= at:
                raise VerificationError(
                    Reason.CERT_REVOKED,
                    f"certificate {leaf.serial_number:x} of {common_name_of(leaf)} was revoked at "
                    f"{entry.revocation_date_utc.isoformat()}",
                )

    def _check_crl(self, country: str, crl: x509.CertificateRevocationList) -> None:
        for ca_cert in self._anchors.get(country, ()):
            if crl.issuer != ca_cert.subject:
                continue
            ca_key = ca_cert.public_key()  # Ed25519: _check_anchor made sure
            if isinstance(ca_key, Ed25519PublicKey) and crl.is_signature_valid(ca_key):
                return
        raise VerificationError(Reason.CERT_UNTRUSTED, f"the CRL is not signed by a CA of {country}")


def _remember(cache: dict[x509.Certificate, T], cert: x509.Certificate, value: T) -> None:
    """Bounded: a peer sending ever new certificates cannot grow the cache without limit."""
    if len(cache) >= _ISSUER_CACHE_SIZE:
        cache.clear()
    cache[cert] = value


def _check_anchor(country: str, cert: x509.Certificate) -> None:
    """Anchors are configuration: a wrong one is our mistake, not the peer's."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        key_usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        public_key = cert.public_key()
    except (x509.ExtensionNotFound, ValueError) as exc:
        raise ConfigError(Reason.CONFIG_INVALID, f"trust anchor for {country} is unusable: {exc}") from exc
    if not (constraints.ca and key_usage.key_cert_sign):
        raise ConfigError(Reason.CONFIG_INVALID, f"trust anchor for {country} is not a CA certificate")
    if not isinstance(public_key, Ed25519PublicKey):
        raise ConfigError(Reason.CONFIG_INVALID, f"trust anchor for {country} does not hold an Ed25519 key")
    if country_of(cert) != country:
        raise ConfigError(
            Reason.CONFIG_INVALID, f"trust anchor for {country} names country {country_of(cert)!r}"
        )


def _check_validity(cert: x509.Certificate, at: datetime, *, what: str) -> None:
    if at < cert.not_valid_before_utc:
        raise VerificationError(
            Reason.CERT_NOT_YET_VALID, f"{what} is valid from {cert.not_valid_before_utc.isoformat()}"
        )
    if at > cert.not_valid_after_utc:
        raise VerificationError(
            Reason.CERT_EXPIRED, f"{what} expired at {cert.not_valid_after_utc.isoformat()}"
        )


def _check_signing_usage(leaf: x509.Certificate) -> None:
    extensions = leaf.extensions
    try:
        constraints = extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is not None and constraints.ca:
        raise VerificationError(Reason.CERT_USAGE, "a CA certificate cannot sign messages")
    try:
        key_usage = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise VerificationError(Reason.CERT_USAGE, "the signer certificate has no key usage") from None
    if not key_usage.digital_signature:
        raise VerificationError(Reason.CERT_USAGE, "the signer certificate may not sign")
    try:
        public_key = leaf.public_key()
    except (ValueError, TypeError) as exc:  # unsupported_algorithm is a ValueError subclass
        raise VerificationError(Reason.CERT_MALFORMED, f"unreadable public key: {exc}") from exc
    if not isinstance(public_key, Ed25519PublicKey):
        raise VerificationError(Reason.CERT_USAGE, "the signer key is not Ed25519")


def _check_key_agreement_usage(cert: x509.Certificate) -> None:
    key_usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    if not key_usage.key_agreement or not isinstance(cert.public_key(), X25519PublicKey):
        raise VerificationError(Reason.CERT_USAGE, "not an X25519 key-agreement certificate")


def _require_time_zone(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ConfigError(Reason.CONFIG_INVALID, f"verification time {at} has no time zone")


def _check_subject(leaf: x509.Certificate, ca_country: str) -> str:
    authority_id = common_name_of(leaf)
    leaf_country = country_of(leaf)
    if authority_id is None or leaf_country is None:
        raise VerificationError(Reason.CERT_MALFORMED, "the subject needs exactly one CN and one C")
    if leaf_country != ca_country:
        raise VerificationError(
            Reason.CERT_AUTHORITY_MISMATCH,
            f"the {ca_country} CA certified an authority of country {leaf_country}",
        )
    # Without this a CA could name another country's authority (RU CA issuing CN=TJ-MOL, C=RU).
    try:
        id_country = authority_country(authority_id)
    except ConfigError:
        raise VerificationError(Reason.CERT_MALFORMED, f"{authority_id!r} is not an authority id") from None
    if id_country != ca_country:
        raise VerificationError(
            Reason.CERT_AUTHORITY_MISMATCH, f"the {ca_country} CA cannot certify {authority_id}"
        )
    return authority_id
