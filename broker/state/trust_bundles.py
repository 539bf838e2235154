"""Trust bundles: everything public a peer needs from us, and what we keep of the peer's.

A bundle is PEM: the country's CA certificates (every generation), its CRL, and every signing and
key-agreement certificate of its authorities (expired and revoked ones too; the CRL says which are
revoked). No private key ever: an import refuses a bundle holding anything but certificates and CRLs.

An import checks everything before it writes anything: the CRL must be signed by one of the bundle's
CAs and be no older than the CRL imported before (an old bundle cannot un-revoke a key), and every
authority certificate must have been issued by one of the bundle's CAs to an authority of that
country. CA certificates and the CRL replace what was imported before; authority certificates are
added (revocation, not absence, is what retires one).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from broker.core.errors import ConfigError, ExchangeError, Reason
from broker.core.pki import (
    authority_country,
    check_country,
    common_name_of,
    country_of,
    is_ca_certificate,
    is_key_agreement_certificate,
)
from broker.core.trust import TrustStore
from broker.state.key_files import (
    CA_FILE,
    ENCRYPTION,
    PEM_BLOCK,
    KeyLayout,
    ca_files,
    cert_path,
    cert_pem,
    certificates_in,
    crl_number,
    crl_pem,
    io_errors,
    load_crls,
    newest_crl,
    write_public,
)


@dataclass(frozen=True)
class ImportedBundle:
    """What an import took in, for the operator."""

    country: str
    ca_certificates: int
    crl_number: int | None
    signing_certificates: int
    key_agreement_certificates: int


def export_bundle(layout: KeyLayout, country: str) -> bytes:
    """Our CA certificates, current CRL and every authority certificate of `country`, as PEM."""
    certs = [cert for _, cert in layout.ca_generations(country)]
    if not certs:
        raise ConfigError(Reason.KEY_MISSING, f"{country} has no CA under {layout.root}")
    crl = newest_crl(load_crls(layout.crl_path(country)))
    authorities = layout.authorities_dir(country)
    with io_errors(f"list {authorities}"):
        directories = (
            sorted(path for path in authorities.iterdir() if path.is_dir()) if authorities.is_dir() else []
        )
    leaves = [cert for directory in directories for cert in _authority_certificates(directory)]
    return (
        b"".join(cert_pem(cert) for cert in certs)
        + (crl_pem(crl) if crl is not None else b"")
        + b"".join(cert_pem(cert) for cert in leaves)
    )


def _authority_certificates(directory: Path) -> list[x509.Certificate]:
    return certificates_in(directory) + certificates_in(directory / ENCRYPTION)


@dataclass(frozen=True)
class Bundle:
    """A bundle's pieces, parsed but not yet checked against each other."""

    country: str
    cas: list[x509.Certificate]
    crls: list[x509.CertificateRevocationList]
    leaves: list[x509.Certificate]  # the authorities' certificates


def read_bundle(data: bytes) -> Bundle:
    """Parse a bundle: PEM certificates and CRLs only, CA certificates of one country."""
    certs, crls = parse_bundle(data)
    cas = [cert for cert in certs if is_ca_certificate(cert)]
    leaves = [cert for cert in certs if not is_ca_certificate(cert)]
    return Bundle(country=_country_of_cas(cas), cas=cas, crls=crls, leaves=leaves)


def import_bundle(layout: KeyLayout, data: bytes, *, country: str | None = None) -> ImportedBundle:
    """Check a peer's bundle whole, then keep it under `peers/<country>/`.

    `country` (optional) is the country the caller expects the bundle to be from.
    """
    bundle = read_bundle(data)
    bundle_country, cas, crls, leaves = bundle.country, bundle.cas, bundle.crls, bundle.leaves
    if country is not None and country != bundle_country:
        raise ConfigError(Reason.CONFIG_INVALID, f"the bundle is {bundle_country}'s, not {country}'s")
    if layout.is_own(bundle_country):
        raise ConfigError(
            Reason.CONFIG_INVALID,
            f"{bundle_country} is our own country here ({layout.root}); it cannot be imported",
        )
    try:
        trust = TrustStore(anchors={bundle_country: cas}, crls={bundle_country: crls})
        identities = [trust.check_issued(leaf) for leaf in leaves]
    except ExchangeError as exc:
        raise ConfigError(exc.reason, f"bundle of {bundle_country}: {exc.diagnostic}") from exc
    _check_not_older(layout, bundle_country, crls)
    _store_peer_trust(layout, bundle_country, cas, crls)
    agreeing = [
        identity.certificate for identity in identities if is_key_agreement_certificate(identity.certificate)
    ]
    _store_peer_certificates(layout, bundle_country, leaves)
    newest = newest_crl(crls)
    return ImportedBundle(
        country=bundle_country,
        ca_certificates=len(cas),
        crl_number=None if newest is None else crl_number(newest),
        signing_certificates=len(leaves) - len(agreeing),
        key_agreement_certificates=len(agreeing),
    )


def remember_peer_trust(
    layout: KeyLayout, country: str, trust: TrustStore, *, key_agreement: Iterable[x509.Certificate] = ()
) -> bool:
    """Keep what a trust update brought for a peer country (its CAs and CRLs as they now stand in
    `trust`, and new key-agreement certificates), so a restarted gateway still honours it.

    False, writing nothing, when `country` is our own: its files here are already the source.
    """
    check_country(country)
    if layout.is_own(country):
        return False
    # `trust` checked every anchor and CRL when it was built: write them as they stand.
    _store_peer_trust(layout, country, trust.anchors(country), trust.crls(country))
    _store_peer_certificates(layout, country, key_agreement)
    return True


def peer_encryption_certificates(layout: KeyLayout, authority_id: str) -> list[x509.Certificate]:
    """A peer authority's imported key-agreement certificates, oldest first."""
    return certificates_in(layout.peer_authority_dir(authority_id) / ENCRYPTION)


def _store_peer_trust(
    layout: KeyLayout,
    country: str,
    certs: Sequence[x509.Certificate],
    crls: Sequence[x509.CertificateRevocationList],
) -> None:
    """Write a peer country's checked CA certificates and CRLs where `KeyStore.trust_store` reads them."""
    peer_dir = layout.peer_dir(country)
    for index, cert in enumerate(certs, start=1):
        write_public(layout.root, peer_dir / f"ca-{index}.cert.pem", cert_pem(cert))
    write_public(layout.root, peer_dir / "crl.pem", b"".join(crl_pem(crl) for crl in crls))
    for path in ca_files(peer_dir):
        match = CA_FILE.fullmatch(path.name)
        if match and int(match.group(1)) > len(certs):
            with io_errors(f"remove {path}"):
                path.unlink()


def _store_peer_certificates(layout: KeyLayout, country: str, certs: Iterable[x509.Certificate]) -> None:
    for cert in certs:
        holder = common_name_of(cert)
        if holder is None or authority_country(holder) != country:
            raise ConfigError(Reason.CONFIG_INVALID, f"a certificate of {holder} is not {country}'s")
        directory = layout.peer_authority_dir(holder)
        if is_key_agreement_certificate(cert):
            directory = directory / ENCRYPTION
        path = cert_path(directory, cert)
        if not path.exists():
            write_public(layout.root, path, cert_pem(cert))


def _check_not_older(layout: KeyLayout, country: str, crls: Sequence[x509.CertificateRevocationList]) -> None:
    held = newest_crl(load_crls(layout.peer_dir(country) / "crl.pem"))
    if held is None:
        return
    offered = newest_crl(list(crls))
    if offered is None or crl_number(offered) < crl_number(held):
        number = "no CRL" if offered is None else f"CRL number {crl_number(offered)}"
        raise ConfigError(
            Reason.CONFIG_INVALID,
            f"the bundle of {country} holds {number}, older than the CRL number {crl_number(held)} "
            "imported before: ask its operators for their current bundle",
        )


def parse_bundle(data: bytes) -> tuple[list[x509.Certificate], list[x509.CertificateRevocationList]]:
    certs: list[x509.Certificate] = []
    crls: list[x509.CertificateRevocationList] = []
    with io_errors("parse the bundle"):
        for block in PEM_BLOCK.finditer(data):
            label = block.group(1)
            if label == b"CERTIFICATE":
                certs.append(x509.load_pem_x509_certificate(block.group(0)))
            elif label == b"X509 CRL":
                crls.append(x509.load_pem_x509_crl(block.group(0)))
            else:  # above all a private key pasted by mistake: refuse rather than store it
                raise ConfigError(Reason.CONFIG_INVALID, f"a trust bundle may not hold {label.decode()!r}")
    if not certs:
        raise ConfigError(
            Reason.CONFIG_INVALID, "the bundle holds no CA certificate (is it PEM from `broker keys export`?)"
        )
    return certs, crls


def _country_of_cas(cas: Sequence[x509.Certificate]) -> str:
    countries = {country_of(cert) for cert in cas}
    if not cas:
        raise ConfigError(Reason.CONFIG_INVALID, "the bundle holds no CA certificate")
    if len(countries) != 1 or None in countries:
        raise ConfigError(Reason.CONFIG_INVALID, "the bundle's CA certificates do not name one country")
    [country] = countries
    assert country is not None
    return check_country(country)
