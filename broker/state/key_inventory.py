"""What a key store holds, certificate by certificate: what `broker keys list` shows."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509

from broker.core.pki import common_name_of
from broker.state.key_files import (
    ENCRYPTION,
    KeyLayout,
    ca_files,
    certificates_in,
    io_errors,
    load_cert,
    load_crls,
    private_key_path,
)

CA = "ca"
SIGNING = "signing"
KEY_AGREEMENT = "key-agreement"


@dataclass(frozen=True)
class CertificateRecord:
    """One certificate in the store."""

    country: str
    holder: str  # authority id, or the CA's common name
    kind: str  # "ca", "authority", "peer-ca" or "peer-authority"
    usage: str  # "ca", "signing" or "key-agreement"
    serial: int
    not_before: datetime
    not_after: datetime
    revoked_at: datetime | None
    has_private_key: bool

    def status(self, at: datetime) -> str:
        """`valid`, `revoked`, `expired` or `not yet valid` at `at`."""
        if self.revoked_at is not None and self.revoked_at <= at:
            return "revoked"
        if at > self.not_after:
            return "expired"
        if at < self.not_before:
            return "not yet valid"
        return "valid"


def inventory(layout: KeyLayout) -> list[CertificateRecord]:
    """Every certificate under the root: our CAs and authorities, then each peer's."""
    records: list[CertificateRecord] = []
    for country in layout.own_countries():
        revoked = layout.read_revoked(country)
        for generation, cert in layout.ca_generations(country):
            has_key = layout.ca_key(country, generation).exists()
            records.append(_record(country, "ca", CA, cert, None, has_key=has_key))
        records += _authorities(country, layout.authorities_dir(country), revoked, kind="authority")
    for country in layout.peer_countries():
        peer_dir = layout.peer_dir(country)
        revoked = _revocations(load_crls(peer_dir / "crl.pem"))
        for path in ca_files(peer_dir):
            records.append(_record(country, "peer-ca", CA, load_cert(path), None, has_key=False))
        records += _authorities(country, peer_dir / "authorities", revoked, kind="peer-authority")
    return records


def _authorities(
    country: str, authorities: Path, revoked: Mapping[int, datetime], *, kind: str
) -> Iterator[CertificateRecord]:
    with io_errors(f"list {authorities}"):
        directories = (
            sorted(path for path in authorities.iterdir() if path.is_dir()) if authorities.is_dir() else []
        )
    for directory in directories:
        for usage, folder in ((SIGNING, directory), (KEY_AGREEMENT, directory / ENCRYPTION)):
            for cert in certificates_in(folder):
                has_key = private_key_path(folder, cert).exists()
                yield _record(country, kind, usage, cert, revoked.get(cert.serial_number), has_key=has_key)


def _revocations(crls: list[x509.CertificateRevocationList]) -> dict[int, datetime]:
    """Serial → earliest revocation time over every CRL the peer sent."""
    revoked: dict[int, datetime] = {}
    for crl in crls:
        for entry in crl:
            known = revoked.get(entry.serial_number)
            if known is None or entry.revocation_date_utc < known:
                revoked[entry.serial_number] = entry.revocation_date_utc
    return revoked


def _record(
    country: str, kind: str, usage: str, cert: x509.Certificate, revoked_at: datetime | None, *, has_key: bool
) -> CertificateRecord:
    return CertificateRecord(
        country=country,
        holder=common_name_of(cert) or cert.subject.rfc4514_string(),
        kind=kind,
        usage=usage,
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        revoked_at=revoked_at,
        has_private_key=has_key,
    )
