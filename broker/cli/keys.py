"""`broker keys ...`: run a country's CA, its authorities' keys and the exchange of trust bundles.

Which key store: `--root DIR` if given; else the `keys_dir` of the country's settings (`--config`, or
`var/<country>/gateway.toml` as `broker init` makes it), the country being `--country` or the
authority's; else `./keys`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509

from broker.cli.common import ConfigOption, JsonOption, exit_with, load_settings, read_input
from broker.cli.kit import kit
from broker.cli.output import print_table
from broker.core.agreement import load_agreement, load_shipped_agreement, shipped_agreement_ids
from broker.core.agreement_set import Agreements
from broker.core.errors import ConfigError, ExchangeError, Reason
from broker.core.pki import authority_country, certificate_thumbprint
from broker.state.keystore import KeyStore

keys_app = typer.Typer(
    help="Country CAs, authority keys, revocation and trust bundles.", no_args_is_help=True
)

RootOption = Annotated[
    Path | None,
    typer.Option(
        "--root", help="The key store (default: keys_dir of var/<country>/gateway.toml, else ./keys)."
    ),
]


def _upper(value: str | None) -> str | None:
    return value.upper() if value else value


CountryOption = Annotated[
    str, typer.Option("--country", help="ISO 3166 alpha-2 code, e.g. TJ.", callback=_upper)
]
AuthorityOption = Annotated[str, typer.Option("--authority", help="Authority id, e.g. TJ-MOL.")]

_FALLBACK_ROOT = Path("keys")


class KeyKind(StrEnum):
    SIGNING = "signing"
    KEY_AGREEMENT = "key-agreement"
    BOTH = "both"

    def includes(self, kind: KeyKind) -> bool:
        return self in (kind, KeyKind.BOTH)


KindOption = Annotated[
    KeyKind,
    typer.Option("--kind", help="signing (messages), key-agreement (personal data sealed to it), or both."),
]


def _now() -> datetime:
    return datetime.now(UTC)


def _store(root: Path | None, country: str | None, config: Path | None = None) -> KeyStore:
    return KeyStore(root=_resolve(root, country, config)[0])


def _resolve(root: Path | None, country: str | None, config: Path | None) -> tuple[Path, Agreements]:
    """The key store's folder and the agreement, as the module docstring says."""
    if root is not None:
        return root, load_agreement()
    settings_file = config or (Path("var") / country.lower() / "gateway.toml" if country else None)
    if country is not None and settings_file is not None and (config is not None or settings_file.is_file()):
        settings = load_settings(country, config)
        return settings.keys_dir, settings.agreement_set()
    if country is not None:
        known = {
            c
            for agreement_id in shipped_agreement_ids()
            for c in load_shipped_agreement(agreement_id).countries
        }
        if country not in known:  # a mistyped code would otherwise write into ./keys unnoticed
            exit_with(
                ConfigError(
                    Reason.CONFIG_INVALID,
                    f"{country} is no party to a shipped agreement ({', '.join(sorted(known))}) and has no "
                    f"var/{country.lower()}/gateway.toml: check the code, or give --root or --config",
                )
            )
    return _FALLBACK_ROOT, load_agreement()


def _country_of(authority: str) -> str:
    try:
        return authority_country(authority)
    except ExchangeError as error:
        exit_with(error)


def _held_kinds(store: KeyStore, authority: str) -> dict[KeyKind, bool]:
    """Whether the authority has a key of each kind already."""
    return {
        KeyKind.SIGNING: bool(store.signing_certificates(authority)),
        KeyKind.KEY_AGREEMENT: bool(store.encryption_certificates(authority)),
    }


def _said(authority: str, cert: x509.Certificate, what: str) -> str:
    return f"{authority}: {what} certificate {cert.serial_number:x} (kid {certificate_thumbprint(cert)})"


@keys_app.command()
def init(
    country: CountryOption,
    root: RootOption = None,
    config: ConfigOption = None,
    validity_days: Annotated[int, typer.Option(min=1)] = 3650,
) -> None:
    """Create the country's CA and an empty CRL (`broker init` does this and the rest)."""
    try:
        cert = _store(root, country, config).init_country(country, now=_now(), validity_days=validity_days)
    except ExchangeError as error:
        exit_with(error)
    typer.echo(f"{country} CA created, valid until {cert.not_valid_after_utc:%Y-%m-%d}")


@keys_app.command()
def issue(
    authority: AuthorityOption,
    country: Annotated[
        str | None, typer.Option("--country", help="The authority's country (checked).", callback=_upper)
    ] = None,
    kind: KindOption = KeyKind.BOTH,
    root: RootOption = None,
    config: ConfigOption = None,
    display_name: Annotated[
        str | None, typer.Option(help="The authority's name (certificate O; default: the agreement's).")
    ] = None,
    validity_days: Annotated[int, typer.Option(min=1)] = 365,
) -> None:
    """Give an authority of the agreement its first keys: a signing key and a key-agreement key."""
    own = _country_of(authority)
    try:
        if country is not None and country != own:
            raise ConfigError(Reason.CONFIG_INVALID, f"authority {authority} does not belong to {country}")
        folder, agreement = _resolve(root, own, config)
        if authority not in {candidate.id for candidate in agreement.authorities}:
            known = ", ".join(a.id for a in agreement.authorities if a.country == own)
            raise ConfigError(
                Reason.CONFIG_INVALID,
                f"{authority} is not an authority of agreement {agreement.id} (those of {own}: {known})",
            )
        store = KeyStore(root=folder)
        held = _held_kinds(store, authority)
        already = [held_kind for held_kind, there in held.items() if there and kind.includes(held_kind)]
        if already:
            raise ConfigError(
                Reason.CONFIG_INVALID, f"{authority} already has a {already[0]} key; rotate it instead"
            )
        name = display_name or agreement.authority(authority).name
        lines = []
        if kind.includes(KeyKind.SIGNING):
            cert = store.issue(authority, own, now=_now(), validity_days=validity_days, display_name=name)
            lines.append(_said(authority, cert, "signing"))
        if kind.includes(KeyKind.KEY_AGREEMENT):
            cert = store.issue_encryption(authority, now=_now(), validity_days=validity_days)
            lines.append(_said(authority, cert, "key-agreement"))
    except ExchangeError as error:
        exit_with(error)
    typer.echo("\n".join(lines))


@keys_app.command()
def rotate(
    authority: AuthorityOption,
    kind: KindOption = KeyKind.BOTH,
    root: RootOption = None,
    config: ConfigOption = None,
    validity_days: Annotated[int, typer.Option(min=1)] = 365,
) -> None:
    """New keys and certificates for an authority; the old ones stay valid until they expire or are
    revoked. A running gateway takes them in by itself; export the bundle to the peer afterwards."""
    store = _store(root, _country_of(authority), config)
    lines = []
    try:
        held = _held_kinds(store, authority)
        missing = [held_kind for held_kind, there in held.items() if not there and kind.includes(held_kind)]
        if missing:  # before anything changes: half a rotation would be worse than none
            raise ConfigError(Reason.KEY_MISSING, f"{authority} has no {missing[0]} key to rotate; issue one")
        if kind.includes(KeyKind.SIGNING):
            cert = store.rotate(authority, now=_now(), validity_days=validity_days)
            lines.append(_said(authority, cert, "new signing"))
        if kind.includes(KeyKind.KEY_AGREEMENT):
            cert = store.issue_encryption(authority, now=_now(), validity_days=validity_days)
            lines.append(_said(authority, cert, "new key-agreement"))
    except ExchangeError as error:
        exit_with(error)
    typer.echo("\n".join(lines))


@keys_app.command()
def revoke(
    authority: AuthorityOption,
    root: RootOption = None,
    config: ConfigOption = None,
    serial: Annotated[
        str | None, typer.Option(help="Hex serial to revoke; without it every certificate of the authority.")
    ] = None,
) -> None:
    """Revoke certificates (of either kind) from now on and rewrite the CRL; export the bundle to the peer."""
    try:
        number = int(serial, 16) if serial is not None else None
    except ValueError:
        exit_with(ConfigError(Reason.CLI_USAGE, f"--serial {serial!r} is not hexadecimal"))
    try:
        revoked = _store(root, _country_of(authority), config).revoke(authority, number, now=_now())
    except ExchangeError as error:
        exit_with(error)
    listed = ", ".join(f"{value:x}" for value in revoked) or "nothing new"
    typer.echo(f"{authority}: revoked {listed}; CRL rewritten")


@keys_app.command("refresh-crl")
def refresh_crl(country: CountryOption, root: RootOption = None, config: ConfigOption = None) -> None:
    """Re-issue the CRL (same revocations, new nextUpdate) before it goes stale; then send it to the peer."""
    try:
        crl = _store(root, country, config).reissue_crl(country, now=_now())
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
    root: RootOption = None,
    config: ConfigOption = None,
    out: Annotated[Path | None, typer.Option(help="Write here instead of standard output.")] = None,
) -> None:
    """Print or write the country's trust bundle: CA certificates, CRL and every authority's signing
    and key-agreement certificates (public only: no private key)."""
    try:
        bundle = _store(root, country, config).export_bundle(country)
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
    file: Annotated[Path, typer.Argument(help="A bundle made by `broker keys export` on the peer's side.")],
    country: Annotated[
        str | None,
        typer.Option(
            "--country", help="Our country, whose key store takes the peer's bundle.", callback=_upper
        ),
    ] = None,
    root: RootOption = None,
    config: ConfigOption = None,
) -> None:
    """Trust the peer country's bundle: its CAs and CRL replace what was imported before, its
    authorities' certificates are added. A running gateway takes it in by itself."""
    data = read_input(file, what="trust bundle")
    try:
        store = _store(root, country, config)
        imported = store.import_bundle(None, data)
    except ExchangeError as error:
        exit_with(error)
    crl = "no CRL" if imported.crl_number is None else f"CRL number {imported.crl_number}"
    typer.echo(
        f"{imported.country} bundle imported into {store.root}: {imported.ca_certificates} CA certificate(s), "
        f"{crl}, {imported.signing_certificates} signing and {imported.key_agreement_certificates} "
        "key-agreement certificate(s)"
    )


KEY_COLUMNS = (
    "country", "kind", "usage", "holder", "serial", "status", "valid_from", "valid_until", "revoked", "private_key",
)  # fmt: skip


@keys_app.command("list")
def list_certificates(
    country: Annotated[
        str | None, typer.Option("--country", help="Whose key store (see --root).", callback=_upper)
    ] = None,
    root: RootOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every certificate in the key store: CAs, our authorities' and the peer's (both kinds), with
    their validity and revocation."""
    now = _now()
    try:
        store = _store(root, country, config)
        records = store.inventory()
    except ExchangeError as error:
        exit_with(error)
    rows = [
        {
            "country": record.country,
            "kind": record.kind,
            "usage": record.usage,
            "holder": record.holder,
            "serial": f"{record.serial:x}",
            "status": record.status(now),
            "valid_from": record.not_before.isoformat(),
            "valid_until": record.not_after.isoformat(),
            "revoked": record.revoked_at.isoformat() if record.revoked_at else None,
            "private_key": record.has_private_key,
        }
        for record in records
    ]
    print_table(KEY_COLUMNS, rows, as_json=as_json, title=f"Certificates under {store.root}")


# A subscriber's kit lives in a module of its own; it is a `keys` verb because it hands out keys.
keys_app.command("kit")(kit)
