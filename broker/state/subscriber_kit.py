"""A subscriber's kit: one folder an operator hands to a consulate, with nothing secret of anyone else's.

    <kit>/subscriber.toml           its settings: its country, its broker as its own RabbitMQ user,
                                    the paths below (relative to the file); 0600
    <kit>/rabbitmq-password.json    {"<its user>": "<its password>"}: its password, no other; 0600
    <kit>/keys/<CC>/ca/ca-<n>.cert.pem, <kit>/keys/<CC>/crl.pem        its country's CAs and CRL
    <kit>/keys/peers/<PEER>/ca-<n>.cert.pem, crl.pem                   the peer's CAs and CRL
    <kit>/keys/<CC>/authorities/<ID>/encryption/<serial>.cert.pem      its key-agreement certificates
    <kit>/keys/<CC>/authorities/<ID>/encryption/private/<serial>.key.pem   and their keys: the only
                                    private keys in the kit, 0600 (personal data is sealed to them)
    <kit>/agreement.toml            only when the country's settings name an agreement file
    <kit>/README.txt                what the kit is, and how to run it
    <kit>/state/                    made at first run: the subscriber's ledger of handled alerts

The `keys` folder has the key store's own layout (keys/README.md), so the subscriber reads it with
the same code as a gateway: the CA certificates make the trust store, the key-agreement keys open
sealed payloads. No signing key, no CA key, no other authority's key, no gateway password. Made
again into the same folder, a kit is brought up to date (new CRL, a rotated key) and keeps its state.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from broker.core.errors import ConfigError, Reason
from broker.state.key_files import (
    CA_FILE,
    KeyLayout,
    ca_files,
    cert_path,
    certificates_in,
    io_errors,
    private_key_path,
    write_private,
    write_public,
)
from broker.state.private_files import private_directory
from broker.state.private_files import write_private as write_private_file
from broker.state.settings import ExchangeSettings
from broker.state.settings_file import write_settings

SETTINGS_FILE = "subscriber.toml"
PASSWORD_FILE = "rabbitmq-password.json"  # noqa: S105 - a file name, not a password
KEYS_FOLDER = "keys"
STATE_FOLDER = "state"
AGREEMENT_FILE = "agreement.toml"
README_FILE = "README.txt"


@dataclass(frozen=True)
class KitRequest:
    """Who the kit is for, and where its material comes from (the operator's side)."""

    authority_id: str
    country: str
    amqp_url: str  # the country's broker, as its subscriber user, without a password
    user: str
    password: str
    keys_dir: Path  # the operator's key store
    peers: tuple[str, ...]
    agreement_file: Path | None = None
    plaintext_hosts: tuple[str, ...] = ()
    crl_grace_s: float | None = None


@dataclass
class Kit:
    folder: Path
    files: list[Path] = field(default_factory=list)  # relative to the folder, sorted


def make_kit(folder: Path, request: KitRequest) -> Kit:
    """Write (or bring up to date) the kit of `request.authority_id` in `folder`."""
    _check_folder(folder, request.authority_id)
    private_directory(folder)
    source = KeyLayout(request.keys_dir)
    target = KeyLayout(folder / KEYS_FOLDER)
    _copy_trust(source, target, request)
    _copy_own_keys(source, target, request.authority_id)
    _write_password(folder, request)
    agreement = None
    if request.agreement_file is not None:
        with io_errors(f"copy the agreement {request.agreement_file}"):
            shutil.copyfile(request.agreement_file, folder / AGREEMENT_FILE)
        agreement = AGREEMENT_FILE
    settings_text = _settings_text(request, agreement)
    # Refused before it is written: a kit whose settings the subscriber would refuse is no kit.
    ExchangeSettings.load(
        None, **ExchangeSettings.file_values(settings_text, folder=folder, source=str(folder / SETTINGS_FILE))
    )
    write_settings(folder / SETTINGS_FILE, settings_text)
    (folder / README_FILE).write_text(_readme(request), encoding="utf-8")
    return Kit(folder=folder, files=kit_files(folder))


def kit_files(folder: Path) -> list[Path]:
    """Every file of a kit, relative to it, its state left out."""
    with io_errors(f"list {folder}"):
        found = [path.relative_to(folder) for path in folder.rglob("*") if path.is_file()]
    return sorted(path for path in found if path.parts[0] != STATE_FOLDER)


def _check_folder(folder: Path, authority_id: str) -> None:
    if folder.exists() and not folder.is_dir():
        raise ConfigError(Reason.CONFIG_INVALID, f"{folder} is not a folder")
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    settings = folder / SETTINGS_FILE
    owner = _kit_owner(folder) if settings.is_file() else None
    if owner != authority_id:
        whose = f"the kit of {owner}" if owner else "not a kit"
        raise ConfigError(
            Reason.CONFIG_INVALID,
            f"{folder} is {whose}: a kit is made in an empty folder or in the same subscriber's kit",
        )


def _kit_owner(folder: Path) -> str | None:
    """The authority whose key-agreement keys the kit in `folder` holds."""
    layout = KeyLayout(folder / KEYS_FOLDER)
    for country in layout.own_countries():
        authorities = layout.authorities_dir(country)
        for directory in sorted(authorities.iterdir()) if authorities.is_dir() else []:
            return directory.name
    return None


def _copy_trust(source: KeyLayout, target: KeyLayout, request: KitRequest) -> None:
    """The CA certificates and CRLs of both countries: public, what verifying an alert needs."""
    own_cas = ca_files(source.ca_dir(request.country))
    if not own_cas:
        raise ConfigError(Reason.KEY_MISSING, f"no CA of {request.country} under {source.root}")
    for path in own_cas:
        _copy_public(target, path, target.ca_dir(request.country) / path.name)
    _copy_public(target, source.crl_path(request.country), target.crl_path(request.country))
    for peer in request.peers:
        peer_cas = [path for path in ca_files(source.peer_dir(peer)) if CA_FILE.fullmatch(path.name)]
        if not peer_cas:
            raise ConfigError(
                Reason.KEY_MISSING,
                f"no CA of {peer} under {source.root}: import its bundle first (`broker keys import`)",
            )
        for path in peer_cas:
            _copy_public(target, path, target.peer_dir(peer) / path.name)
        _copy_public(target, source.peer_dir(peer) / "crl.pem", target.peer_dir(peer) / "crl.pem")


def _copy_own_keys(source: KeyLayout, target: KeyLayout, authority_id: str) -> None:
    """The subscriber's key-agreement certificates and private keys, every generation it holds."""
    directory = source.encryption_dir(authority_id)
    certificates = certificates_in(directory)
    if not certificates:
        raise ConfigError(
            Reason.KEY_MISSING,
            f"{authority_id} has no key-agreement key under {source.root}: "
            f"`broker keys issue --authority {authority_id} --kind key-agreement`",
        )
    destination = target.encryption_dir(authority_id)
    for cert in certificates:
        _copy_public(target, cert_path(directory, cert), cert_path(destination, cert))
        key = private_key_path(directory, cert)
        copied = private_key_path(destination, cert)
        if key.exists() and not copied.exists():
            with io_errors(f"read {key}"):
                data = key.read_bytes()
            write_private(target.root, copied, data)


def _copy_public(target: KeyLayout, path: Path, destination: Path) -> None:
    if not path.exists():
        return  # a country without a CRL yet has nothing to copy
    with io_errors(f"read {path}"):
        data = path.read_bytes()
    write_public(target.root, destination, data)


def _write_password(folder: Path, request: KitRequest) -> None:
    text = json.dumps({request.user: request.password}, indent=2) + "\n"
    with io_errors(f"write {folder / PASSWORD_FILE}"):
        write_private_file(folder / PASSWORD_FILE, text.encode("utf-8"))


def _settings_text(request: KitRequest, agreement: str | None) -> str:
    lines = [
        f"# Settings of subscriber {request.authority_id}, written by `broker keys kit`. Relative paths",
        "# are relative to this file's folder; an EXCHANGE_<NAME> variable wins over a line here",
        "# (EXCHANGE_STATE_DIR when the kit is mounted read-only).",
        f'country = "{request.country}"',
        "# Its own RabbitMQ user: it may consume its own queue and nothing else.",
        f"amqp_url = {json.dumps(request.amqp_url)}",
        f'keys_dir = "{KEYS_FOLDER}"',
        f'state_dir = "{STATE_FOLDER}"',
        f'secrets_file = "{PASSWORD_FILE}"',
    ]
    if agreement is not None:
        lines.append(f'agreement_file = "{agreement}"')
    if request.plaintext_hosts:
        lines.append(f"plaintext_hosts = {json.dumps(list(request.plaintext_hosts))}")
    if request.crl_grace_s is not None:
        lines.append(f"crl_grace_s = {request.crl_grace_s!r}")
    return "\n".join(lines) + "\n"


def _readme(request: KitRequest) -> str:
    return (
        f"Subscriber kit of {request.authority_id} ({request.country}).\n\n"
        f"Run: broker subscribe --as {request.authority_id} --kit <this folder> --out alerts.jsonl\n\n"
        f"It logs in to {request.country}'s RabbitMQ as {request.user}, which may only consume the\n"
        f"queue sub.{request.authority_id}, verifies every alert against the CA certificates in keys/\n"
        "and opens sealed personal data with its own key-agreement key. Keep the folder private (0700):\n"
        "rabbitmq-password.json and keys/**/private/ are secrets; the subscriber refuses to start when\n"
        "other users of the host could read them. Ask the operator for a new kit when a key rotates or\n"
        "the CRL nears its next update (the operator runs `broker keys kit` into this folder again).\n"
    )
