"""A country's folder, made in one step: its settings file, its key store and room for its state.

    <dir>/gateway.toml         every setting, described (`broker.state.settings_file`), 0600
    <dir>/keys/                the key store: the country's CA, and for every authority of this
                               country in the agreement a signing key and a key-agreement key
    <dir>/*.sqlite             the state: audit log, outbox, key vault, subscriber ledgers

Everything of one country lives under its folder, so two countries on one machine share no key: each
gets the other's public material only by importing its bundle. Making it again changes nothing; a
folder left half made (or an agreement that gained an authority) is completed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from broker.core.agreement_set import Agreements
from broker.core.errors import ConfigError, Reason
from broker.state.keystore import KeyStore
from broker.state.private_files import private_directory
from broker.state.settings import ExchangeSettings
from broker.state.settings_file import render_settings, toml_value, write_settings

SETTINGS_FILE = "gateway.toml"
KEYS_FOLDER = "keys"
# The state folder is <state_dir>/<country>: with the settings file in <dir>, that is <dir> itself.
STATE_DIR_FROM_THE_FOLDER = ".."


@dataclass
class CountrySetup:
    """What `set_up_country` found and made."""

    folder: Path
    settings_file: Path
    keys_dir: Path
    made: list[str] = field(default_factory=list)  # empty: everything was there already


def set_up_country(
    folder: Path,
    *,
    country: str,
    agreement: Agreements,
    amqp_url: str,
    secrets_file: Path,
    now: datetime,
    agreements: tuple[str, ...] = (),
) -> CountrySetup:
    """Make whatever of `country`'s folder is missing; change nothing that is there but the
    `agreements` setting, when `agreements` names them (a peer added)."""
    if country not in agreement.countries:
        raise ConfigError(
            Reason.CONFIG_INVALID,
            f"unknown country {country}: agreement {agreement.id} is between {' and '.join(agreement.countries)}",
        )
    if folder.exists() and not folder.is_dir():
        raise ConfigError(Reason.CONFIG_INVALID, f"{folder} is not a folder: a country needs one of its own")
    settings_path = folder / SETTINGS_FILE
    setup = CountrySetup(folder=folder, settings_file=settings_path, keys_dir=folder / KEYS_FOLDER)
    try:
        private_directory(folder)
    except OSError as exc:
        raise ConfigError(Reason.CONFIG_INVALID, f"cannot make the folder {folder}: {exc.strerror}") from None
    if settings_path.exists():
        settings = ExchangeSettings.load(settings_path)
        if settings.country != country:
            raise ConfigError(
                Reason.CONFIG_INVALID, f"{settings_path} is the settings of {settings.country}, not {country}"
            )
        setup.keys_dir = settings.keys_dir
        if agreements and settings.agreements != agreements:
            _set_agreements(settings_path, agreements)
            setup.made.append(f"agreements = {list(agreements)} in {settings_path}")
    else:
        _write_settings(
            settings_path,
            country=country,
            amqp_url=amqp_url,
            secrets_file=secrets_file,
            agreements=agreements,
        )
        setup.made.append(f"settings {settings_path}")
    setup.made += _issue_missing_keys(KeyStore(root=setup.keys_dir), country, agreement, now=now)
    return setup


def _write_settings(
    path: Path, *, country: str, amqp_url: str, secrets_file: Path, agreements: tuple[str, ...]
) -> None:
    values: dict[str, object] = {
        "country": country,
        "amqp_url": amqp_url,
        "keys_dir": KEYS_FOLDER,
        "state_dir": STATE_DIR_FROM_THE_FOLDER,
        "secrets_file": _relative_to(secrets_file, path.parent),
        "agreements": agreements or None,
    }
    text = render_settings(
        values,
        header=f"Settings of the {country} gateway, written by `broker init`. Relative paths are "
        "relative to this file's folder;\nany setting can also be given as an EXCHANGE_<NAME> "
        "environment variable, which wins over this file.",
    )
    # Refused before anything is written: a URL the gateway would refuse (plain AMQP to another host).
    ExchangeSettings.load(None, **ExchangeSettings.file_values(text, folder=path.parent, source=str(path)))
    write_settings(path, text)


def _set_agreements(path: Path, agreements: tuple[str, ...]) -> None:
    """Set `agreements` in an existing settings file, that line only: the operator's other edits stay."""
    line = f"agreements = {toml_value(list(agreements))}"
    lines = path.read_text("utf-8").splitlines()
    at = [i for i, text in enumerate(lines) if text.startswith(("agreements =", "# agreements ="))]
    if at:
        lines[at[0]] = line
    else:
        lines.append(line)
    text = "\n".join(lines) + "\n"
    ExchangeSettings.load(None, **ExchangeSettings.file_values(text, folder=path.parent, source=str(path)))
    write_settings(path, text)


def _relative_to(target: Path, folder: Path) -> str:
    """`target` as the settings file should name it: relative to the file's folder when both sit
    under the same parent (a country folder beside the secrets file), else absolute."""
    target, folder = target.absolute(), folder.absolute()
    if target.parent == folder.parent or folder.parent in target.parents:
        return os.path.relpath(target, folder)
    return str(target)


def _issue_missing_keys(store: KeyStore, country: str, agreement: Agreements, *, now: datetime) -> list[str]:
    made: list[str] = []
    if not store.has_ca(country):
        store.init_country(country, now=now)
        made.append(f"{country} CA")
    for authority in agreement.authorities:
        if authority.country != country:
            continue
        kinds = []
        if not store.signing_certificates(authority.id):
            store.issue(authority.id, country, now=now, display_name=authority.name)
            kinds.append("signing key")
        if not store.encryption_certificates(authority.id):
            store.issue_encryption(authority.id, now=now)
            kinds.append("key-agreement key")
        if kinds:
            made.append(f"{authority.id}: {' and '.join(kinds)}")
    return made
