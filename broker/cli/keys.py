"""`broker keys ...`: run a country's CA, its authorities' keys and the exchange of trust bundles."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from broker.cli.common import JsonOption, exit_with, read_input
from broker.cli.output import print_table
from broker.core.errors import ConfigError, ExchangeError, Reason
from broker.core.pki import certificate_thumbprint
from broker.state.keystore import KeyStore

keys_app = typer.Typer(
    help="Country CAs, authority keys, revocation and trust bundles.", no_args_is_help=True
)

RootOption = Annotated[Path, typer.Option("--root", help="The keys directory.")]
CountryOption = Annotated[str, typer.Option("--country", help="ISO 3166 alpha-2 code, e.g. TJ.")]
AuthorityOption = Annotated[str, typer.Option("--authority", help="Authority id, e.g. TJ-MOL.")]

_DEFAULT_ROOT = Path("keys")


def _store(root: Path) -> KeyStore:
    return KeyStore(root=root)


def _now() -> datetime:
    return datetime.now(UTC)


@keys_app.command()
def init(
    country: CountryOption,
    root: RootOption = _DEFAULT_ROOT,
    validity_days: Annotated[int, typer.Option(min=1)] = 3650,
) -> None:
    """Create the country's CA and an empty CRL."""
    try:
        cert = _store(root).init_country(country, now=_now(), validity_days=validity_days)
    except ExchangeError as error:
        exit_with(error)
    typer.echo(f"{country} CA created, valid until {cert.not_valid_after_utc:%Y-%m-%d}")


@keys_app.command()
def issue(
    authority: AuthorityOption,
    country: CountryOption,
    root: RootOption = _DEFAULT_ROOT,
    display_name: Annotated[str | None, typer.Option(help="The authority's name (certificate O).")] = None,
    validity_days: Annotated[int, typer.Option(min=1)] = 365,
) -> None:
    """Give a new authority its signing key and certificate."""
    try:
        cert = _store(root).issue(
            authority, country, now=_now(), validity_days=validity_days, display_name=display_name
        )
    except ExchangeError as error:
        exit_with(error)
    typer.echo(f"{authority}: certificate {cert.serial_number:x} (kid {certificate_thumbprint(cert)})")


@keys_app.command()
def rotate(
    authority: AuthorityOption,
    root: RootOption = _DEFAULT_ROOT,
    validity_days: Annotated[int, typer.Option(min=1)] = 365,
) -> None:
    """New key and certificate for an authority; the old one stays valid until it expires or is revoked."""
    try:
        cert = _store(root).rotate(authority, now=_now(), validity_days=validity_days)
    except ExchangeError as error:
        exit_with(error)
    typer.echo(f"{authority}: new certificate {cert.serial_number:x} (kid {certificate_thumbprint(cert)})")


@keys_app.command()
def revoke(
    authority: AuthorityOption,
    root: RootOption = _DEFAULT_ROOT,
    serial: Annotated[
        str | None, typer.Option(help="Hex serial to revoke; without it every certificate of the authority.")
    ] = None,
) -> None:
    """Revoke certificates from now on and rewrite the CRL; export the bundle to the peer afterwards."""
    try:
        number = int(serial, 16) if serial is not None else None
    except ValueError:
        exit_with(ConfigError(Reason.CLI_USAGE, f"--serial {serial!r} is not hexadecimal"))
    try:
        revoked = _store(root).revoke(authority, number, now=_now())
    except ExchangeError as error:
        exit_with(error)
    listed = ", ".join(f"{value:x}" for value in revoked) or "nothing new"
    typer.echo(f"{authority}: revoked {listed}; CRL rewritten")


@keys_app.command("refresh-crl")
def refresh_crl(country: CountryOption, root: RootOption = _DEFAULT_ROOT) -> None:
    """Re-issue the CRL (same revocations, new nextUpdate) before it goes stale; then send it to the peer."""
    try:
        crl = _store(root).reissue_crl(country, now=_now())
    except ExchangeError as error:
        exit_with(error)
    next_update = crl.next_update_utc
    typer.echo(
        f"{country} CRL re-issued, next update {next_update:%Y-%m-%d %H:%M} UTC; send it to the peer "
        "(a trust.update, or `broker keys export` for them to import)"
        if next_update is not None
        else f"{country} CRL re-issued"
    )


@keys_app.command("export")
def export_bundle(
    country: CountryOption,
    root: RootOption = _DEFAULT_ROOT,
    out: Annotated[Path | None, typer.Option(help="Write here instead of standard output.")] = None,
) -> None:
    """Print or write the country's trust bundle (CA certificates and CRL; no private keys)."""
    try:
        bundle = _store(root).export_bundle(country)
    except ExchangeError as error:
        exit_with(error)
    if out is None:
        typer.echo(bundle.decode("ascii"), nl=False)
        return
    try:
        out.write_bytes(bundle)
    except OSError as exc:
        exit_with(ConfigError(Reason.CONFIG_INVALID, f"cannot write the bundle to {out}: {exc.strerror}"))
    typer.echo(f"{country} bundle written to {out}")


@keys_app.command("import")
def import_bundle(
    country: CountryOption,
    file: Annotated[Path, typer.Argument(help="A bundle made by `broker keys export` on the peer's side.")],
    root: RootOption = _DEFAULT_ROOT,
) -> None:
    """Trust a peer country's CA certificates and CRL (replaces what was imported before)."""
    data = read_input(file, what="trust bundle")
    try:
        _store(root).import_bundle(country, data)
    except ExchangeError as error:
        exit_with(error)
    typer.echo(f"{country} bundle imported")


KEY_COLUMNS = ("country", "kind", "holder", "serial", "valid_from", "valid_until", "revoked", "private_key")


@keys_app.command("list")
def list_certificates(root: RootOption = _DEFAULT_ROOT, as_json: JsonOption = False) -> None:
    """Show every certificate under the root: CAs, authorities and imported peer CAs."""
    try:
        records = _store(root).inventory()
    except ExchangeError as error:
        exit_with(error)
    rows = [
        {
            "country": record.country,
            "kind": record.kind,
            "holder": record.holder,
            "serial": f"{record.serial:x}",
            "valid_from": record.not_before.isoformat(),
            "valid_until": record.not_after.isoformat(),
            "revoked": record.revoked_at.isoformat() if record.revoked_at else None,
            "private_key": record.has_private_key,
        }
        for record in records
    ]
    print_table(KEY_COLUMNS, rows, as_json=as_json, title=f"Certificates under {root}")
