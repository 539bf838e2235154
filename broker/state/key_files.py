"""The files of a key store: where each piece lives, and reading and writing them safely.

Layout (see keys/README.md):

    <root>/<CC>/ca/ca-<n>.cert.pem                                  CA generations, public
    <root>/<CC>/ca/private/ca-<n>.key.pem                           CA keys, 0600
    <root>/<CC>/authorities/<AUTH-ID>/<serial>.cert.pem             signing certificates, public
    <root>/<CC>/authorities/<AUTH-ID>/private/<serial>.key.pem      signing keys, 0600
    <root>/<CC>/authorities/<AUTH-ID>/encryption/...                key-agreement certificates and keys, alike
    <root>/<CC>/crl.pem, <root>/<CC>/revoked.json                   revocations (the JSON rebuilds the CRL)
    <root>/peers/<CC>/ca-<n>.cert.pem, crl.pem                      another country's imported CAs and CRL
    <root>/peers/<CC>/authorities/<AUTH-ID>/[encryption/]<serial>.cert.pem   its authorities' certificates

Every file or parse problem becomes a `ConfigError` naming what was being done.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from broker.core.errors import ConfigError, Reason
from broker.core.pki import authority_country
from broker.state.private_files import private_directory

CA_FILE = re.compile(r"ca-(\d+)\.cert\.pem")
PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.+?-----END \1-----\r?\n?", re.DOTALL)
CERT_GLOB = "*.cert.pem"
PEERS = "peers"
ENCRYPTION = "encryption"
_PRIVATE_FILE_MODE = 0o600
_PUBLIC_FILE_MODE = 0o644
_DIR_MODE = 0o700

PrivateKey = Ed25519PrivateKey | X25519PrivateKey


class KeyLayout:
    """Where each piece of a key store lives under its root, and the readers every part shares."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # --- our own countries ---------------------------------------------------------------------

    def ca_dir(self, country: str) -> Path:
        return self.root / country / "ca"

    def ca_key(self, country: str, generation: int) -> Path:
        return self.ca_dir(country) / "private" / f"ca-{generation}.key.pem"

    def crl_path(self, country: str) -> Path:
        return self.root / country / "crl.pem"

    def revoked_path(self, country: str) -> Path:
        return self.root / country / "revoked.json"

    def authorities_dir(self, country: str) -> Path:
        return self.root / country / "authorities"

    def authority_dir(self, authority_id: str) -> Path:
        return self.authorities_dir(authority_country(authority_id)) / authority_id

    def encryption_dir(self, authority_id: str) -> Path:
        return self.authority_dir(authority_id) / ENCRYPTION

    def ca_generations(self, country: str) -> list[tuple[int, x509.Certificate]]:
        generations = []
        for path in ca_files(self.ca_dir(country)):
            match = CA_FILE.fullmatch(path.name)
            assert match is not None  # ca_files only returns matching names
            generations.append((int(match.group(1)), load_cert(path)))
        return generations

    def is_own(self, country: str) -> bool:
        """Whether this store runs `country`'s CA (else its material can only be imported)."""
        return bool(ca_files(self.ca_dir(country)))

    def read_revoked(self, country: str) -> dict[int, datetime]:
        path = self.revoked_path(country)
        if not path.exists():
            return {}
        with io_errors(f"read {path}"):
            raw = json.loads(path.read_text(encoding="utf-8"))
            return {int(serial, 16): datetime.fromisoformat(when) for serial, when in raw.items()}

    # --- peers ----------------------------------------------------------------------------------

    def peer_dir(self, country: str) -> Path:
        return self.root / PEERS / country

    def peer_authority_dir(self, authority_id: str) -> Path:
        return self.peer_dir(authority_country(authority_id)) / "authorities" / authority_id

    def peer_countries(self) -> list[str]:
        peers = self.root / PEERS
        with io_errors(f"list {peers}"):
            return sorted(path.name for path in peers.iterdir() if path.is_dir()) if peers.is_dir() else []

    def own_countries(self) -> list[str]:
        if not self.root.is_dir():
            return []
        with io_errors(f"list {self.root}"):
            return sorted(path.name for path in self.root.iterdir() if (path / "ca").is_dir())


@contextmanager
def io_errors(action: str) -> Iterator[None]:
    """Turn file and parse failures into ConfigError naming what we were doing."""
    try:
        yield
    except FileNotFoundError as exc:
        raise ConfigError(Reason.KEY_MISSING, f"cannot {action}: {exc}") from exc
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(Reason.CONFIG_INVALID, f"cannot {action}: {exc}") from exc


def ca_files(directory: Path) -> list[Path]:
    with io_errors(f"list {directory}"):
        if not directory.is_dir():
            return []
        files = [path for path in directory.iterdir() if CA_FILE.fullmatch(path.name)]
    return sorted(files, key=lambda path: int(path.name.split(".")[0].removeprefix("ca-")))


def certificates_in(directory: Path) -> list[x509.Certificate]:
    """Every `<serial>.cert.pem` directly in `directory`, oldest first."""
    with io_errors(f"list {directory}"):
        paths = sorted(directory.glob(CERT_GLOB)) if directory.is_dir() else []
    return sorted(
        (load_cert(path) for path in paths), key=lambda c: (c.not_valid_before_utc, c.serial_number)
    )


def private_key_path(directory: Path, cert: x509.Certificate) -> Path:
    """Where the private key of `cert`, kept in `directory`, lives."""
    return directory / "private" / f"{cert.serial_number:x}.key.pem"


def cert_path(directory: Path, cert: x509.Certificate) -> Path:
    return directory / f"{cert.serial_number:x}.cert.pem"


def load_cert(path: Path) -> x509.Certificate:
    with io_errors(f"read certificate {path}"):
        return x509.load_pem_x509_certificate(path.read_bytes())


def load_crls(path: Path) -> list[x509.CertificateRevocationList]:
    if not path.exists():
        return []
    with io_errors(f"read CRL {path}"):
        data = path.read_bytes()
        return [x509.load_pem_x509_crl(block.group(0)) for block in PEM_BLOCK.finditer(data)]


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    key = _load_private_key(path)
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(Reason.CONFIG_INVALID, f"{path} is not an Ed25519 key")
    return key


def load_agreement_key(path: Path) -> X25519PrivateKey:
    key = _load_private_key(path)
    if not isinstance(key, X25519PrivateKey):
        raise ConfigError(Reason.CONFIG_INVALID, f"{path} is not an X25519 key")
    return key


def load_agreement_keys(paths: Sequence[Path]) -> list[X25519PrivateKey]:
    """Key-agreement private keys from PEM files, or every `*.key.pem` in a folder (or its `private/`):
    an auditor names its key file, or the `encryption` folder of its authority with every generation."""
    files: list[Path] = []
    for path in paths:
        if not path.is_dir():
            files.append(path)
            continue
        with io_errors(f"list {path}"):
            found = sorted(path.glob("*.key.pem")) or sorted((path / "private").glob("*.key.pem"))
        if not found:
            raise ConfigError(Reason.CONFIG_INVALID, f"no *.key.pem in {path} or {path / 'private'}")
        files += found
    return [load_agreement_key(file) for file in files]


def _load_private_key(path: Path) -> object:
    with io_errors(f"read private key {path}"):
        return serialization.load_pem_private_key(path.read_bytes(), password=None)


def crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0


def newest_crl(crls: list[x509.CertificateRevocationList]) -> x509.CertificateRevocationList | None:
    return max(crls, key=crl_number) if crls else None


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)


def _ensure_dir(root: Path, directory: Path) -> None:
    """Create `directory` and any missing parent below (and including) `root` with mode 0700; one
    that exists already (made by hand, or under another umask) is tightened to 0700."""
    # os.makedirs applies its mode only to the last component, so walk down ourselves.
    with io_errors(f"create {directory}"):
        root.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        private_directory(root)
        current = root
        for part in directory.relative_to(root).parts:
            current = current / part
            private_directory(current)


def write_private(root: Path, path: Path, data: bytes) -> None:
    """Create a key file that is 0600 from its first byte; never overwrite an existing key."""
    _ensure_dir(root, path.parent)
    with io_errors(f"write {path}"):
        _write_synced(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _PRIVATE_FILE_MODE, data)


def write_public(root: Path, path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so readers never see half a CRL or certificate. The
    same bytes again are not rewritten: a running gateway sees no change where there is none."""
    with io_errors(f"read {path}"):
        if path.is_file() and path.read_bytes() == data:
            return
    _ensure_dir(root, path.parent)
    temporary = path.with_name(f".{path.name}.tmp")
    with io_errors(f"write {path}"):
        _write_synced(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _PUBLIC_FILE_MODE, data)
        os.replace(temporary, path)


def _write_synced(path: Path, flags: int, mode: int, data: bytes) -> None:
    """`data` into `path` opened with `flags` (created with `mode`), on disk before it returns."""
    descriptor = os.open(path, flags, mode)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
