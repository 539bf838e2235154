"""`broker init`: a working country folder in one command (settings, CA, every authority's keys)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import unquote, urlsplit, urlunsplit

import typer

from broker.cli.common import CountryOption, exit_with
from broker.cli.output import console
from broker.core.agreement_set import (
    AgreementSet,
    is_agreement_path,
    load_agreements,
    shipped_agreements_of,
    shipped_pairs,
)
from broker.core.errors import ConfigError, ExchangeError, Reason
from broker.exchange.topology import CountryBroker
from broker.state.country_dir import set_up_country

DEFAULT_SECRETS = Path("var/rabbitmq-secrets.json")  # where `broker topology apply` keeps them


def init(
    country: CountryOption,
    folder: Annotated[
        Path | None, typer.Option("--dir", help="The country's folder (default: var/<country>).")
    ] = None,
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker",
            help="This country's RabbitMQ, amqp[s]://host:port/vhost (default: amqp://127.0.0.1:5672/<country>); "
            "the gateway logs in as the vhost's gateway user.",
        ),
    ] = None,
    secrets: Annotated[
        Path,
        typer.Option(
            "--secrets", help="Where the RabbitMQ passwords are (what `broker topology apply` writes)."
        ),
    ] = DEFAULT_SECRETS,
    agreement: Annotated[
        list[str] | None,
        typer.Option(
            "--agreement",
            help="An agreement the country serves, one per peer: a shipped id (tj-ru-2004, tj-uz-2021) "
            "or an agreement file; repeatable. Default: the first shipped agreement naming the country. "
            "Given again on a set-up folder, it replaces the `agreements` setting and adds missing keys.",
        ),
    ] = None,
) -> None:
    """Make a country's folder: gateway.toml (every setting, described), its CA, and for every
    authority of the country a signing key and a key-agreement key. Running it again changes nothing."""
    cc = country.lower()
    where = folder if folder is not None else Path("var") / cc
    try:
        url = gateway_url(broker or f"amqp://127.0.0.1:5672/{cc}", country=cc)
        # A file is named absolute in gateway.toml: there a relative path means the file's folder.
        entries = tuple(str(Path(e).resolve()) if is_agreement_path(e) else e for e in agreement or ())
        served = load_agreements(country, entries) if entries else _default_agreement(country)
        setup = set_up_country(
            where,
            country=country,
            agreement=served,
            agreements=entries,
            amqp_url=url,
            secrets_file=secrets,
            now=datetime.now(UTC),
        )
    except ExchangeError as error:
        exit_with(error)
    if not setup.made:
        console.print(f"{country} is already set up in {where}: nothing changed")
        return
    for made in setup.made:
        console.print(f"made {made}")
    console.print(
        f"{country} set up in {where}. Next: `broker keys export --country {country} --out "
        f"{cc}-bundle.pem` for the peer, and `broker keys import --country {country} <peer's bundle>`"
    )


def _default_agreement(country: str) -> AgreementSet:
    shipped = shipped_agreements_of(country)
    if not shipped:
        raise ConfigError(
            Reason.CONFIG_INVALID,
            f"unknown country {country}: the shipped agreements are between {shipped_pairs()}; "
            "give the country's agreement file with --agreement",
        )
    return AgreementSet.single(shipped[0], country)


def gateway_url(url: str, *, country: str) -> str:
    """`url` with the gateway user of its vhost, the one `broker topology apply` makes: its password
    stays in the secrets file, never in the settings."""
    parts = urlsplit(url)
    if parts.password is not None:
        raise ConfigError(
            Reason.CONFIG_INVALID,
            "--broker must not carry a password: the gateway reads it from the secrets file (--secrets)",
        )
    host = parts.netloc.rpartition("@")[2]
    bare = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    expected = CountryBroker(country=country, url=bare).gateway_user
    user = unquote(parts.username or "") or expected
    if user != expected:
        raise ConfigError(
            Reason.CONFIG_INVALID,
            f"the gateway logs in as {expected} (the user `broker topology apply` makes for that vhost), not {user}",
        )
    return urlunsplit((parts.scheme, f"{user}@{host}", parts.path, parts.query, parts.fragment))
