"""The keys/ directory: each country's CA, its authorities' keys, revocations and imported peer bundles.

Layout (see keys/README.md):

    <root>/<CC>/ca/ca-<n>.cert.pem                           CA generations, public
    <root>/<CC>/ca/private/ca-<n>.key.pem                    CA keys, 0600
    <root>/<CC>/authorities/<AUTH-ID>/<serial>.cert.pem      authority certificates, public
    <root>/<CC>/authorities/<AUTH-ID>/private/<serial>.key.pem
    <root>/<CC>/crl.pem, <root>/<CC>/revoked.json            revocations (the JSON rebuilds the CRL)
    <root>/peers/<CC>/ca-<n>.cert.pem, crl.pem               another country's imported trust bundle

This module is the I/O edge of the PKI: it reads the clock only where the caller leaves `at` out, and
turns every file or parse problem into a `ConfigError`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
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
from broker.state.private_files import private_directory

_CA_FILE = re.compile(r"ca-(\d+)\.cert\.pem")
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.+?-----END \1-----\r?\n?", re.DOTALL)
_PRIVATE_FILE_MODE = 0o600
_PUBLIC_FILE_MODE = 0o644
_DIR_MODE = 0o700


@dataclass(frozen=True)
class CertificateRecord:
    """One certificate in the store, as `broker keys list` shows it."""

    country: str
    holder: str  # authority id, or the CA's common name
    kind: str  # "ca", "authority" or "peer-ca"
    serial: int
    not_before: datetime
    not_after: datetime
    revoked_at: datetime | None
    has_private_key: bool


class KeyStore:
    def __init__(self, *, root: Path, crl_validity_days: int = 30) -> None:
        self._root = root
        self._crl_validity = timedelta(days=crl_validity_days)

    @property
    def root(self) -> Path:
        return self._root

    # --- country CA -----------------------------------------------------------------------------

    def init_country(self, country: str, *, now: datetime, validity_days: int = 3650) -> x509.Certificate:
        """Create the country's first CA and an empty CRL."""
        check_country(country)
        if self._ca_generations(country):
            raise ConfigError(Reason.CONFIG_INVALID, f"{country} already has a CA under {self._root}")
        return self._new_ca_generation(country, 1, now=now, validity_days=validity_days)

    def rotate_ca(self, country: str, *, now: datetime, validity_days: int = 3650) -> x509.Certificate:
        """Add a CA generation; older generations stay anchors so their certificates keep verifying."""
        generations = self._ca_generations(country)
        if not generations:
            raise ConfigError(Reason.KEY_MISSING, f"{country} has no CA yet; run init first")
        return self._new_ca_generation(country, generations[-1][0] + 1, now=now, validity_days=validity_days)

    def _new_ca_generation(
        self, country: str, generation: int, *, now: datetime, validity_days: int
    ) -> x509.Certificate:
        key, cert = create_ca(country=country, not_before=now, not_after=now + timedelta(days=validity_days))
        ca_dir = self._root / country / "ca"
        _write_private(self._root, ca_dir / "private" / f"ca-{generation}.key.pem", _private_pem(key))
        _write_public(self._root, ca_dir / f"ca-{generation}.cert.pem", _cert_pem(cert))
        self._write_crl(country, self._read_revoked(country), now=now)
        return cert

    # --- authorities ----------------------------------------------------------------------------

    def issue(
        self,
        authority_id: str,
        country: str,
        *,
        now: datetime,
        validity_days: int = 365,
        display_name: str | None = None,
    ) -> x509.Certificate:
        """A first key and certificate for a new authority."""
        check_country(country)
        if authority_country(authority_id) != country:
            raise ConfigError(Reason.CONFIG_INVALID, f"authority {authority_id} does not belong to {country}")
        if self._authority_certs(authority_id):
            raise ConfigError(Reason.CONFIG_INVALID, f"{authority_id} already has keys; rotate them instead")
        return self._issue(authority_id, country, now=now, validity_days=validity_days, name=display_name)

    def rotate(self, authority_id: str, *, now: datetime, validity_days: int = 365) -> x509.Certificate:
        """A new key and certificate; the old certificate keeps its validity so both verify meanwhile."""
        existing = self._authority_certs(authority_id)
        if not existing:
            raise ConfigError(Reason.KEY_MISSING, f"{authority_id} has no certificate to rotate")
        newest = max(existing, key=lambda cert: (cert.not_valid_before_utc, cert.serial_number))
        return self._issue(
            authority_id,
            authority_country(authority_id),
            now=now,
            validity_days=validity_days,
            name=display_name_of(newest),
        )

    def _issue(
        self, authority_id: str, country: str, *, now: datetime, validity_days: int, name: str | None
    ) -> x509.Certificate:
        return self._certify_and_store(
            authority_id, country, key=Ed25519PrivateKey.generate(), directory=self._authority_dir(authority_id),
            now=now, validity_days=validity_days, display_name=name, usage=CertificateUsage.SIGNING,
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
        serial = f"{cert.serial_number:x}"
        _write_private(self._root, directory / "private" / f"{serial}.key.pem", _private_pem(key))
        _write_public(self._root, directory / f"{serial}.cert.pem", _cert_pem(cert))
        return cert

    # --- key agreement (sealing personal data) ------------------------------------------------

    def issue_encryption(
        self, authority_id: str, *, now: datetime, validity_days: int = 365
    ) -> x509.Certificate:
        """A new X25519 key-agreement certificate; earlier ones stay, so data sealed to them still opens."""
        return self._certify_and_store(
            authority_id, authority_country(authority_id), key=X25519PrivateKey.generate(),
            directory=self._encryption_dir(authority_id), now=now, validity_days=validity_days,
            display_name=None, usage=CertificateUsage.KEY_AGREEMENT,
        )  # fmt: skip

    def encryption_certificates(self, authority_id: str) -> list[x509.Certificate]:
        """Every key-agreement certificate of the authority, oldest first."""
        directory = self._encryption_dir(authority_id)
        with _io(f"list {directory}"):
            paths = sorted(directory.glob("*.cert.pem")) if directory.is_dir() else []
        return sorted(
            (_load_cert(path) for path in paths), key=lambda c: (c.not_valid_before_utc, c.serial_number)
        )

    def decryptor(self, authority_id: str) -> Decryptor:
        """The authority's key-agreement private keys of every generation, by certificate thumbprint."""
        keys: dict[str, X25519PrivateKey] = {}
        for cert in self.encryption_certificates(authority_id):
            path = self._encryption_dir(authority_id) / "private" / f"{cert.serial_number:x}.key.pem"
            if not path.exists():
                continue  # a peer's certificate, or a key retired on purpose
            with _io(f"read private key {path}"):
                key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, X25519PrivateKey) or key.public_key() != cert.public_key():
                raise ConfigError(Reason.CONFIG_INVALID, f"{path} is not the key of its certificate")
            keys[certificate_thumbprint(cert)] = key
        if not keys:
            raise ConfigError(
                Reason.KEY_MISSING, f"{authority_id} has no key-agreement key under {self._root}"
            )
        return Decryptor(authority_id=authority_id, keys=keys)

    def current_crl(self, country: str) -> x509.CertificateRevocationList | None:
        """The country's latest CRL, as a `trust.update` carries it."""
        crl_path = self._root / country / "crl.pem"
        crls = _load_crls(crl_path) if crl_path.exists() else []
        return max(crls, key=_crl_number) if crls else None

    def _encryption_dir(self, authority_id: str) -> Path:
        return self._authority_dir(authority_id) / "encryption"

    def revoke(self, authority_id: str, serial: int | None = None, *, now: datetime) -> list[int]:
        """Revoke one certificate, or every unrevoked one of the authority; rewrite the CRL.

        Returns the serials newly revoked. A serial revoked earlier keeps its first revocation time.
        """
        country = authority_country(authority_id)
        serials = [cert.serial_number for cert in self._authority_certs(authority_id)]
        if serial is not None and serial not in serials:
            raise ConfigError(Reason.KEY_MISSING, f"{authority_id} has no certificate {serial:x}")
        revoked = self._read_revoked(country)
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
        self._write_crl(country, self._read_revoked(country), now=now)
        crl = self.current_crl(country)
        if crl is None:  # _write_crl has just written it
            raise ConfigError(Reason.CONFIG_INVALID, f"the {country} CRL was not written")
        return crl

    def signer(self, authority_id: str, *, at: datetime | None = None) -> Signer:
        """The newest key of the authority whose certificate is valid and unrevoked at `at`."""
        moment = at if at is not None else datetime.now(UTC)
        country = authority_country(authority_id)
        revoked = self._read_revoked(country)
        usable = [
            cert
            for cert in self._authority_certs(authority_id)
            if cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc
            and not (cert.serial_number in revoked and revoked[cert.serial_number] <= moment)
        ]
        if not usable:
            raise ConfigError(Reason.KEY_MISSING, f"{authority_id} has no valid certificate at {moment}")
        leaf = max(usable, key=lambda cert: (cert.not_valid_before_utc, cert.serial_number))
        key_path = self._authority_dir(authority_id) / "private" / f"{leaf.serial_number:x}.key.pem"
        key = _load_private_key(key_path)
        if key.public_key() != leaf.public_key():
            raise ConfigError(Reason.CONFIG_INVALID, f"{key_path} does not match its certificate")
        return Signer(
            authority_id=authority_id, private_key=key, chain=(leaf, self._issuer_of(leaf, country))
        )

    # --- trust bundles ----------------------------------------------------------------------------

    def export_bundle(self, country: str) -> bytes:
        """Our CA certificates (every generation) and current CRL: what the peer imports."""
        certs = [cert for _, cert in self._ca_generations(country)]
        if not certs:
            raise ConfigError(Reason.KEY_MISSING, f"{country} has no CA under {self._root}")
        crl_path = self._root / country / "crl.pem"
        with _io(f"read {crl_path}"):
            crl = crl_path.read_bytes() if crl_path.exists() else b""
        return b"".join(_cert_pem(cert) for cert in certs) + crl

    def import_bundle(self, country: str, data: bytes) -> None:
        """Replace the stored bundle of a peer country after checking that its CRL matches its CAs."""
        check_country(country)
        if self._ca_generations(country):
            raise ConfigError(Reason.CONFIG_INVALID, f"{country} is our own country; it cannot be imported")
        certs, crls = _parse_bundle(data)
        try:
            TrustStore(anchors={country: certs}, crls={country: crls})
        except ExchangeError as exc:
            raise ConfigError(Reason.CONFIG_INVALID, f"bundle for {country}: {exc.diagnostic}") from exc
        self._store_peer_bundle(country, certs, crls)

    def _store_peer_bundle(
        self, country: str, certs: Sequence[x509.Certificate], crls: Sequence[x509.CertificateRevocationList]
    ) -> None:
        """Write a peer country's checked CA certificates and CRLs where `trust_store` reads them."""
        peer_dir = self._root / "peers" / country
        for index, cert in enumerate(certs, start=1):
            _write_public(self._root, peer_dir / f"ca-{index}.cert.pem", _cert_pem(cert))
        crl_pem = b"".join(crl.public_bytes(serialization.Encoding.PEM) for crl in crls)
        _write_public(self._root, peer_dir / "crl.pem", crl_pem)
        with _io(f"clean {peer_dir}"):
            for path in peer_dir.iterdir():
                match = _CA_FILE.fullmatch(path.name)
                if match and int(match.group(1)) > len(certs):
                    path.unlink()

    def remember_peer_trust(
        self, country: str, trust: TrustStore, *, key_agreement: Iterable[x509.Certificate] = ()
    ) -> bool:
        """Keep what a trust update brought for a peer country (its CAs and CRLs as they now stand in
        `trust`, and new key-agreement certificates), so a restarted gateway still honours it.

        False, writing nothing, when `country` is our own: its files here are already the source.
        """
        check_country(country)
        if self._ca_generations(country):
            return False
        # `trust` checked every anchor and CRL when it was built: write them as they stand.
        self._store_peer_bundle(country, trust.anchors(country), trust.crls(country))
        for cert in key_agreement:
            holder = common_name_of(cert)
            if holder is None or authority_country(holder) != country:
                raise ConfigError(
                    Reason.CONFIG_INVALID, f"a key-agreement certificate of {holder} is not {country}'s"
                )
            path = self._encryption_dir(holder) / f"{cert.serial_number:x}.cert.pem"
            _write_public(self._root, path, _cert_pem(cert))
        return True

    def trust_store(
        self, countries: Iterable[str], *, crl_grace: timedelta = DEFAULT_CRL_GRACE
    ) -> TrustStore:
        """Anchors and CRLs for each country, from our own CA or from an imported bundle."""
        anchors: dict[str, list[x509.Certificate]] = {}
        crls: dict[str, list[x509.CertificateRevocationList]] = {}
        for country in countries:
            ca_dir, crl_path = self._trust_paths(country)
            anchors[country] = [_load_cert(path) for path in _ca_files(ca_dir)]
            crls[country] = _load_crls(crl_path) if crl_path.exists() else []
        try:
            return TrustStore(anchors=anchors, crls=crls, crl_grace=crl_grace)
        except ExchangeError as exc:
            raise ConfigError(Reason.CONFIG_INVALID, f"trust material: {exc.diagnostic}") from exc

    def inventory(self) -> list[CertificateRecord]:
        """Every certificate under the root, own and imported."""
        records: list[CertificateRecord] = []
        if not self._root.is_dir():
            return records
        with _io(f"list {self._root}"):
            countries = sorted(path.name for path in self._root.iterdir() if (path / "ca").is_dir())
            peers = self._root / "peers"
            peer_countries = sorted(path.name for path in peers.iterdir()) if peers.is_dir() else []
        for country in countries:
            revoked = self._read_revoked(country)
            for generation, cert in self._ca_generations(country):
                has_key = (self._root / country / "ca" / "private" / f"ca-{generation}.key.pem").exists()
                records.append(_record(country, "ca", cert, None, has_key=has_key))
            authorities = self._root / country / "authorities"
            for directory in sorted(authorities.iterdir()) if authorities.is_dir() else []:
                for cert in self._authority_certs(directory.name):
                    has_key = (directory / "private" / f"{cert.serial_number:x}.key.pem").exists()
                    revoked_at = revoked.get(cert.serial_number)
                    records.append(_record(country, "authority", cert, revoked_at, has_key=has_key))
        for country in peer_countries:
            for path in _ca_files(self._root / "peers" / country):
                records.append(_record(country, "peer-ca", _load_cert(path), None, has_key=False))
        return records

    # --- internals ------------------------------------------------------------------------------

    def _ca_generations(self, country: str) -> list[tuple[int, x509.Certificate]]:
        generations = []
        for path in _ca_files(self._root / country / "ca"):
            match = _CA_FILE.fullmatch(path.name)
            assert match is not None  # _ca_files only returns matching names
            generations.append((int(match.group(1)), _load_cert(path)))
        return generations

    def _current_ca(self, country: str, *, now: datetime) -> tuple[Ed25519PrivateKey, x509.Certificate]:
        valid = [
            (generation, cert)
            for generation, cert in self._ca_generations(country)
            if cert.not_valid_before_utc <= now <= cert.not_valid_after_utc
        ]
        if not valid:
            raise ConfigError(Reason.KEY_MISSING, f"{country} has no CA valid at {now} under {self._root}")
        generation, cert = valid[-1]
        key = _load_private_key(self._root / country / "ca" / "private" / f"ca-{generation}.key.pem")
        return key, cert

    def _issuer_of(self, leaf: x509.Certificate, country: str) -> x509.Certificate:
        for _, ca_cert in self._ca_generations(country):
            try:
                leaf.verify_directly_issued_by(ca_cert)
            except (InvalidSignature, ValueError, TypeError):
                continue
            return ca_cert
        raise ConfigError(Reason.KEY_MISSING, f"the CA that issued {common_name_of(leaf)} is missing")

    def _authority_dir(self, authority_id: str) -> Path:
        return self._root / authority_country(authority_id) / "authorities" / authority_id

    def _authority_certs(self, authority_id: str) -> list[x509.Certificate]:
        directory = self._authority_dir(authority_id)
        with _io(f"list {directory}"):
            paths = sorted(directory.glob("*.cert.pem")) if directory.is_dir() else []
        return [_load_cert(path) for path in paths]

    def _trust_paths(self, country: str) -> tuple[Path, Path]:
        """Where a country's CA certificates and CRL live: our own CA first, else its imported bundle."""
        own = self._root / country
        if _ca_files(own / "ca"):
            return own / "ca", own / "crl.pem"
        peer = self._root / "peers" / country
        if _ca_files(peer):
            return peer, peer / "crl.pem"
        raise ConfigError(
            Reason.KEY_MISSING, f"no CA certificate for {country}: init it or import its bundle"
        )

    def _read_revoked(self, country: str) -> dict[int, datetime]:
        path = self._root / country / "revoked.json"
        if not path.exists():
            return {}
        with _io(f"read {path}"):
            raw = json.loads(path.read_text(encoding="utf-8"))
            return {int(serial, 16): datetime.fromisoformat(when) for serial, when in raw.items()}

    def _write_revoked(self, country: str, revoked: dict[int, datetime]) -> None:
        entries = {f"{serial:x}": when.isoformat() for serial, when in sorted(revoked.items())}
        text = json.dumps(entries, indent=2) + "\n"
        _write_public(self._root, self._root / country / "revoked.json", text.encode())

    def _write_crl(self, country: str, revoked: dict[int, datetime], *, now: datetime) -> None:
        ca_key, ca_cert = self._current_ca(country, now=now)
        crl_path = self._root / country / "crl.pem"
        previous = _load_crls(crl_path) if crl_path.exists() else []
        crl = build_crl(
            ca_key=ca_key,
            ca_cert=ca_cert,
            revoked=sorted(revoked.items()),
            this_update=now,
            next_update=now + self._crl_validity,
            crl_number=max((_crl_number(crl) for crl in previous), default=0) + 1,
        )
        _write_public(self._root, crl_path, crl.public_bytes(serialization.Encoding.PEM))


def _record(
    country: str, kind: str, cert: x509.Certificate, revoked_at: datetime | None, *, has_key: bool
) -> CertificateRecord:
    return CertificateRecord(
        country=country,
        holder=common_name_of(cert) or cert.subject.rfc4514_string(),
        kind=kind,
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        revoked_at=revoked_at,
        has_private_key=has_key,
    )


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0


def _parse_bundle(data: bytes) -> tuple[list[x509.Certificate], list[x509.CertificateRevocationList]]:
    certs: list[x509.Certificate] = []
    crls: list[x509.CertificateRevocationList] = []
    with _io("parse the bundle"):
        for block in _PEM_BLOCK.finditer(data):
            label = block.group(1)
            if label == b"CERTIFICATE":
                certs.append(x509.load_pem_x509_certificate(block.group(0)))
            elif label == b"X509 CRL":
                crls.append(x509.load_pem_x509_crl(block.group(0)))
            else:  # above all a private key pasted by mistake: refuse rather than store it
                raise ConfigError(Reason.CONFIG_INVALID, f"a trust bundle may not hold {label.decode()!r}")
    if not certs:
        raise ConfigError(Reason.CONFIG_INVALID, "the bundle holds no CA certificate")
    return certs, crls


@contextmanager
def _io(action: str) -> Iterator[None]:
    """Turn file and parse failures into ConfigError naming what we were doing."""
    try:
        yield
    except FileNotFoundError as exc:
        raise ConfigError(Reason.KEY_MISSING, f"cannot {action}: {exc}") from exc
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(Reason.CONFIG_INVALID, f"cannot {action}: {exc}") from exc


def _ca_files(directory: Path) -> list[Path]:
    with _io(f"list {directory}"):
        if not directory.is_dir():
            return []
        files = [path for path in directory.iterdir() if _CA_FILE.fullmatch(path.name)]
    return sorted(files, key=lambda path: int(path.name.split(".")[0].removeprefix("ca-")))


def _load_cert(path: Path) -> x509.Certificate:
    with _io(f"read certificate {path}"):
        return x509.load_pem_x509_certificate(path.read_bytes())


def _load_crls(path: Path) -> list[x509.CertificateRevocationList]:
    with _io(f"read CRL {path}"):
        data = path.read_bytes()
        return [x509.load_pem_x509_crl(block.group(0)) for block in _PEM_BLOCK.finditer(data)]


def _load_private_key(path: Path) -> Ed25519PrivateKey:
    with _io(f"read private key {path}"):
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(Reason.CONFIG_INVALID, f"{path} is not an Ed25519 key")
    return key


def _private_pem(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _ensure_dir(root: Path, directory: Path) -> None:
    """Create `directory` and any missing parent below (and including) `root` with mode 0700; one
    that exists already (made by hand, or under another umask) is tightened to 0700."""
    # os.makedirs applies its mode only to the last component, so walk down ourselves.
    with _io(f"create {directory}"):
        root.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        private_directory(root)
        current = root
        for part in directory.relative_to(root).parts:
            current = current / part
            private_directory(current)


def _write_private(root: Path, path: Path, data: bytes) -> None:
    """Create a key file that is 0600 from its first byte; never overwrite an existing key."""
    _ensure_dir(root, path.parent)
    with _io(f"write {path}"):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _PRIVATE_FILE_MODE)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def _write_public(root: Path, path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so readers never see half a CRL or certificate."""
    _ensure_dir(root, path.parent)
    temporary = path.with_name(f".{path.name}.tmp")
    with _io(f"write {path}"):
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _PUBLIC_FILE_MODE)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
