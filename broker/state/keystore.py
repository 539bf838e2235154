"""The keys/ directory: each country's CA, its authorities' keys, revocations and imported peer bundles.

The layout is `broker.state.key_files`'s; bundles and what a peer sent live in
`broker.state.trust_bundles`, the listing in `broker.state.key_inventory`. This module is the I/O
edge of the PKI: it reads the clock only where the caller leaves `at` out, and turns every file or
parse problem into a `ConfigError`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from broker.core.errors import ConfigError, ExchangeError, Reason
from broker.core.personal import Decryptor
from broker.core.pki import (
    CertificateUsage,
    Signer,
    authority_country,
    build_crl,
    certificate_thumbprint,
    check_country,
    common_name_of,
    create_ca,
    display_name_of,
    issue_authority_certificate,
)
from broker.core.trust import DEFAULT_CRL_GRACE, TrustStore
from broker.state import trust_bundles
from broker.state.key_files import (
    KeyLayout,
    ca_files,
    cert_path,
    cert_pem,
    certificates_in,
    crl_number,
    crl_pem,
    load_agreement_key,
    load_cert,
    load_crls,
    load_signing_key,
    newest_crl,
    private_key_path,
    private_pem,
    write_private,
    write_public,
)
from broker.state.key_inventory import CertificateRecord, inventory
from broker.state.trust_bundles import ImportedBundle

__all__ = ["CertificateRecord", "ImportedBundle", "KeyStore"]


class KeyStore:
    def __init__(self, *, root: Path, crl_validity_days: int = 30) -> None:
        self._root = root
        self._layout = KeyLayout(root)
        self._crl_validity = timedelta(days=crl_validity_days)

    @property
    def root(self) -> Path:
        return self._root

    # --- country CA -----------------------------------------------------------------------------

    def has_ca(self, country: str) -> bool:
        return self._layout.is_own(country)

    def init_country(self, country: str, *, now: datetime, validity_days: int = 3650) -> x509.Certificate:
        """Create the country's first CA and an empty CRL."""
        check_country(country)
        if self._layout.ca_generations(country):
            raise ConfigError(Reason.CONFIG_INVALID, f"{country} already has a CA under {self._root}")
        return self._new_ca_generation(country, 1, now=now, validity_days=validity_days)

    def rotate_ca(self, country: str, *, now: datetime, validity_days: int = 3650) -> x509.Certificate:
        """Add a CA generation; older generations stay anchors so their certificates keep verifying."""
        generations = self._layout.ca_generations(country)
        if not generations:
            raise ConfigError(Reason.KEY_MISSING, f"{country} has no CA yet; run init first")
        return self._new_ca_generation(country, generations[-1][0] + 1, now=now, validity_days=validity_days)

    def _new_ca_generation(
        self, country: str, generation: int, *, now: datetime, validity_days: int
    ) -> x509.Certificate:
        key, cert = create_ca(country=country, not_before=now, not_after=now + timedelta(days=validity_days))
        write_private(self._root, self._layout.ca_key(country, generation), private_pem(key))
        write_public(self._root, self._layout.ca_dir(country) / f"ca-{generation}.cert.pem", cert_pem(cert))
        self._write_crl(country, self._layout.read_revoked(country), now=now)
        return cert

    # --- authorities' signing keys ---------------------------------------------------------------

    def issue(
        self,
        authority_id: str,
        country: str,
        *,
        now: datetime,
        validity_days: int = 365,
        display_name: str | None = None,
    ) -> x509.Certificate:
        """A first signing key and certificate for a new authority."""
        check_country(country)
        if authority_country(authority_id) != country:
            raise ConfigError(Reason.CONFIG_INVALID, f"authority {authority_id} does not belong to {country}")
        if self.signing_certificates(authority_id):
            raise ConfigError(Reason.CONFIG_INVALID, f"{authority_id} already has keys; rotate them instead")
        return self._issue(authority_id, country, now=now, validity_days=validity_days, name=display_name)

    def rotate(self, authority_id: str, *, now: datetime, validity_days: int = 365) -> x509.Certificate:
        """A new signing key and certificate; the old certificate keeps its validity so both verify meanwhile."""
        existing = self.signing_certificates(authority_id)
        if not existing:
            raise ConfigError(Reason.KEY_MISSING, f"{authority_id} has no certificate to rotate")
        return self._issue(
            authority_id,
            authority_country(authority_id),
            now=now,
            validity_days=validity_days,
            name=display_name_of(existing[-1]),
        )

    def signing_certificates(self, authority_id: str) -> list[x509.Certificate]:
        """The authority's own signing certificates, oldest first."""
        return certificates_in(self._layout.authority_dir(authority_id))

    def _issue(
        self, authority_id: str, country: str, *, now: datetime, validity_days: int, name: str | None
    ) -> x509.Certificate:
        return self._certify_and_store(
            authority_id, country, key=Ed25519PrivateKey.generate(),
            directory=self._layout.authority_dir(authority_id), now=now, validity_days=validity_days,
            display_name=name, usage=CertificateUsage.SIGNING,
        )  # fmt: skip

    def _certify_and_store(
        self,
        authority_id: str,
        country: str,
        *,
        key: Ed25519PrivateKey | X25519PrivateKey,
        directory: Path,
        now: datetime,
        validity_days: int,
        display_name: str | None,
        usage: CertificateUsage,
    ) -> x509.Certificate:
        """Certify `key` for the authority with the country's current CA; keep both under `directory`."""
        ca_key, ca_cert = self._current_ca(country, now=now)
        cert = issue_authority_certificate(
            ca_key=ca_key,
            ca_cert=ca_cert,
            authority_id=authority_id,
            country=country,
            public_key=key.public_key(),
            not_before=now,
            # A certificate outliving its CA would never verify past the CA's end anyway.
            not_after=min(now + timedelta(days=validity_days), ca_cert.not_valid_after_utc),
            display_name=display_name,
            usage=usage,
        )
        write_private(self._root, private_key_path(directory, cert), private_pem(key))
        write_public(self._root, cert_path(directory, cert), cert_pem(cert))
        return cert

    # --- key agreement (sealing personal data) ------------------------------------------------

    def issue_encryption(
        self, authority_id: str, *, now: datetime, validity_days: int = 365
    ) -> x509.Certificate:
        """A new X25519 key-agreement certificate; earlier ones stay, so data sealed to them still opens."""
        return self._certify_and_store(
            authority_id, authority_country(authority_id), key=X25519PrivateKey.generate(),
            directory=self._layout.encryption_dir(authority_id), now=now, validity_days=validity_days,
            display_name=None, usage=CertificateUsage.KEY_AGREEMENT,
        )  # fmt: skip

    def encryption_certificates(self, authority_id: str) -> list[x509.Certificate]:
        """Every key-agreement certificate of the authority (ours, or a peer's we imported), oldest first."""
        certs = certificates_in(self._layout.encryption_dir(authority_id))
        certs += [
            cert
            for cert in trust_bundles.peer_encryption_certificates(self._layout, authority_id)
            if cert not in certs
        ]
        return sorted(certs, key=lambda c: (c.not_valid_before_utc, c.serial_number))

    def decryptor(self, authority_id: str) -> Decryptor:
        """The authority's key-agreement private keys of every generation, by certificate thumbprint,
        and the thumbprints of its certificates whose private key is not here."""
        directory = self._layout.encryption_dir(authority_id)
        keys: dict[str, X25519PrivateKey] = {}
        missing: set[str] = set()
        for cert in certificates_in(directory):
            path = private_key_path(directory, cert)
            if not path.exists():
                missing.add(certificate_thumbprint(cert))
                continue
            key = load_agreement_key(path)
            if key.public_key() != cert.public_key():
                raise ConfigError(Reason.CONFIG_INVALID, f"{path} is not the key of its certificate")
            keys[certificate_thumbprint(cert)] = key
        if not keys and not missing:
            raise ConfigError(
                Reason.KEY_MISSING, f"{authority_id} has no key-agreement key under {self._root}"
            )
        return Decryptor(authority_id=authority_id, keys=keys, missing=frozenset(missing))

    # --- revocation -----------------------------------------------------------------------------

    def current_crl(self, country: str) -> x509.CertificateRevocationList | None:
        """The country's latest CRL, as a `trust.update` carries it."""
        return newest_crl(load_crls(self._layout.crl_path(country)))

    def revoke(self, authority_id: str, serial: int | None = None, *, now: datetime) -> list[int]:
        """Revoke one certificate (signing or key agreement), or every unrevoked one of the authority;
        rewrite the CRL.

        Returns the serials newly revoked. A serial revoked earlier keeps its first revocation time.
        """
        country = authority_country(authority_id)
        certs = self.signing_certificates(authority_id)
        certs += certificates_in(self._layout.encryption_dir(authority_id))
        serials = [cert.serial_number for cert in certs]
        if serial is not None and serial not in serials:
            raise ConfigError(Reason.KEY_MISSING, f"{authority_id} has no certificate {serial:x}")
        revoked = self._layout.read_revoked(country)
        targets = [serial] if serial is not None else serials
        newly = [target for target in targets if target not in revoked]
        for target in newly:
            revoked[target] = now
        self._write_revoked(country, revoked)
        self._write_crl(country, revoked, now=now)
        return newly

    def reissue_crl(self, country: str, *, now: datetime) -> x509.CertificateRevocationList:
        """The same revocations in a new CRL valid from `now`: due before the current one's nextUpdate,
        or the peer's gateways refuse this country's messages with `crl.stale` after their grace."""
        self._write_crl(country, self._layout.read_revoked(country), now=now)
        crl = self.current_crl(country)
        if crl is None:  # _write_crl has just written it
            raise ConfigError(Reason.CONFIG_INVALID, f"the {country} CRL was not written")
        return crl

    # --- signing ----------------------------------------------------------------------------------

    def signer(self, authority_id: str, *, at: datetime | None = None) -> Signer:
        """The newest key of the authority whose certificate is valid and unrevoked at `at`."""
        moment = at if at is not None else datetime.now(UTC)
        country = authority_country(authority_id)
        revoked = self._layout.read_revoked(country)
        usable = [
            cert
            for cert in self.signing_certificates(authority_id)
            if cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc
            and not (cert.serial_number in revoked and revoked[cert.serial_number] <= moment)
        ]
        if not usable:
            raise ConfigError(Reason.KEY_MISSING, f"{authority_id} has no valid certificate at {moment}")
        leaf = max(usable, key=lambda cert: (cert.not_valid_before_utc, cert.serial_number))
        key_path = private_key_path(self._layout.authority_dir(authority_id), leaf)
        key = load_signing_key(key_path)
        if key.public_key() != leaf.public_key():
            raise ConfigError(Reason.CONFIG_INVALID, f"{key_path} does not match its certificate")
        return Signer(
            authority_id=authority_id, private_key=key, chain=(leaf, self._issuer_of(leaf, country))
        )

    # --- trust bundles and peers ------------------------------------------------------------------

    def export_bundle(self, country: str) -> bytes:
        """Our CA certificates, current CRL and every authority certificate: what the peer imports."""
        return trust_bundles.export_bundle(self._layout, country)

    def import_bundle(self, country: str | None, data: bytes) -> ImportedBundle:
        """Check a peer's bundle (expected from `country`, if named) and keep it (`trust_bundles`)."""
        return trust_bundles.import_bundle(self._layout, data, country=country)

    def remember_peer_trust(
        self, country: str, trust: TrustStore, *, key_agreement: Iterable[x509.Certificate] = ()
    ) -> bool:
        """Keep what a trust update brought for a peer country; False when `country` is our own."""
        return trust_bundles.remember_peer_trust(self._layout, country, trust, key_agreement=key_agreement)

    def trust_store(
        self, countries: Iterable[str], *, crl_grace: timedelta = DEFAULT_CRL_GRACE
    ) -> TrustStore:
        """Anchors and CRLs for each country, from our own CA or from an imported bundle."""
        anchors: dict[str, list[x509.Certificate]] = {}
        crls: dict[str, list[x509.CertificateRevocationList]] = {}
        for country in countries:
            ca_dir, crl_path = self._trust_paths(country)
            anchors[country] = [load_cert(path) for path in ca_files(ca_dir)]
            crls[country] = load_crls(crl_path)
        try:
            return TrustStore(anchors=anchors, crls=crls, crl_grace=crl_grace)
        except ExchangeError as exc:
            raise ConfigError(Reason.CONFIG_INVALID, f"trust material: {exc.diagnostic}") from exc

    def inventory(self) -> list[CertificateRecord]:
        """Every certificate under the root, own and imported, of both kinds."""
        return inventory(self._layout)

    # --- internals ------------------------------------------------------------------------------

    def _current_ca(self, country: str, *, now: datetime) -> tuple[Ed25519PrivateKey, x509.Certificate]:
        valid = [
            (generation, cert)
            for generation, cert in self._layout.ca_generations(country)
            if cert.not_valid_before_utc <= now <= cert.not_valid_after_utc
        ]
        if not valid:
            raise ConfigError(Reason.KEY_MISSING, f"{country} has no CA valid at {now} under {self._root}")
        generation, cert = valid[-1]
        return load_signing_key(self._layout.ca_key(country, generation)), cert

    def _issuer_of(self, leaf: x509.Certificate, country: str) -> x509.Certificate:
        for _, ca_cert in self._layout.ca_generations(country):
            try:
                leaf.verify_directly_issued_by(ca_cert)
            except (InvalidSignature, ValueError, TypeError):
                continue
            return ca_cert
        raise ConfigError(Reason.KEY_MISSING, f"the CA that issued {common_name_of(leaf)} is missing")

    def _trust_paths(self, country: str) -> tuple[Path, Path]:
        """Where a country's CA certificates and CRL live: our own CA first, else its imported bundle."""
        if self._layout.is_own(country):
            return self._layout.ca_dir(country), self._layout.crl_path(country)
        peer = self._layout.peer_dir(country)
        if ca_files(peer):
            return peer, peer / "crl.pem"
        raise ConfigError(
            Reason.KEY_MISSING, f"no CA certificate for {country}: init it or import its bundle"
        )

    def _write_revoked(self, country: str, revoked: dict[int, datetime]) -> None:
        entries = {f"{serial:x}": when.isoformat() for serial, when in sorted(revoked.items())}
        text = json.dumps(entries, indent=2) + "\n"
        write_public(self._root, self._layout.revoked_path(country), text.encode())

    def _write_crl(self, country: str, revoked: dict[int, datetime], *, now: datetime) -> None:
        ca_key, ca_cert = self._current_ca(country, now=now)
        crl_path = self._layout.crl_path(country)
        crl = build_crl(
            ca_key=ca_key,
            ca_cert=ca_cert,
            revoked=sorted(revoked.items()),
            this_update=now,
            next_update=now + self._crl_validity,
            crl_number=max((crl_number(crl) for crl in load_crls(crl_path)), default=0) + 1,
        )
        write_public(self._root, crl_path, crl_pem(crl))
