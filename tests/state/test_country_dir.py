"""A country's folder in one step: settings, CA and every authority's two keys; again, nothing changes."""

from __future__ import annotations

import hashlib
import shutil
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from broker.core.agreement import Agreement
from broker.core.errors import ConfigError, Reason
from broker.state.country_dir import set_up_country
from broker.state.keystore import KeyStore
from broker.state.settings import ExchangeSettings

NOW = datetime(2026, 3, 1, tzinfo=UTC)
URL = "amqp://tj-gateway@127.0.0.1:5672/tj"


def snapshot(folder: Path) -> dict[str, tuple[str, int, int]]:
    """Every file and folder under `folder`: content hash, mtime and mode."""
    found = {}
    for path in sorted([folder, *folder.rglob("*")]):
        info = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        found[str(path.relative_to(folder))] = (digest, info.st_mtime_ns, stat.S_IMODE(info.st_mode))
    return found


def _set_up(folder: Path, agreement: Agreement, country: str = "TJ") -> list[str]:
    return set_up_country(
        folder,
        country=country,
        agreement=agreement,
        amqp_url=URL,
        secrets_file=folder.parent / "rabbitmq-secrets.json",
        now=NOW,
    ).made


def test_a_country_folder_holds_settings_a_ca_and_both_keys_of_every_authority(
    tmp_path: Path, agreement: Agreement
) -> None:
    folder = tmp_path / "var" / "tj"
    made = _set_up(folder, agreement)
    tajik = [authority.id for authority in agreement.authorities if authority.country == "TJ"]
    assert "TJ-GW" in tajik
    assert made == [
        f"settings {folder / 'gateway.toml'}",
        "TJ CA",
        *(f"{authority}: signing key and key-agreement key" for authority in tajik),
    ]
    settings = ExchangeSettings.load(folder / "gateway.toml")
    assert settings.country == "TJ"
    assert settings.amqp_url == URL
    assert settings.keys_dir == (folder / "keys").resolve()
    assert settings.country_state_dir == folder.resolve()
    assert settings.secrets_file == (tmp_path / "var" / "rabbitmq-secrets.json").resolve()
    store = KeyStore(root=settings.keys_dir)
    for authority in tajik:
        assert store.signer(authority, at=NOW).authority_id == authority
        assert store.decryptor(authority).keys
    assert not (folder / "keys" / "RU").exists()  # the peer's material only ever comes by import
    for path in folder.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        if path.is_dir():
            assert mode == 0o700, path
        elif "private" in path.parts or path.name == "gateway.toml":
            assert mode == 0o600, path


def test_setting_up_again_changes_nothing(tmp_path: Path, agreement: Agreement) -> None:
    folder = tmp_path / "tj"
    _set_up(folder, agreement)
    before = snapshot(folder)
    assert _set_up(folder, agreement) == []
    assert snapshot(folder) == before


def test_a_half_made_folder_is_completed_and_the_rest_left_alone(
    tmp_path: Path, agreement: Agreement
) -> None:
    folder = tmp_path / "tj"
    _set_up(folder, agreement)
    shutil.rmtree(folder / "keys" / "TJ" / "authorities" / "TJ-MOL" / "encryption")
    (folder / "gateway.toml").write_text((folder / "gateway.toml").read_text() + "prefetch = 7\n")
    kept = snapshot(folder / "keys" / "TJ" / "ca")
    assert _set_up(folder, agreement) == ["TJ-MOL: key-agreement key"]
    assert ExchangeSettings.load(folder / "gateway.toml").prefetch == 7
    assert snapshot(folder / "keys" / "TJ" / "ca") == kept


@pytest.mark.parametrize(
    ("prepare", "expected"),
    [
        ("file", "is not a folder"),
        ("other country", "settings of RU, not TJ"),
    ],
)
def test_a_folder_that_cannot_be_this_countrys_is_refused(
    tmp_path: Path, agreement: Agreement, prepare: str, expected: str
) -> None:
    folder = tmp_path / "tj"
    if prepare == "file":
        folder.write_text("not a folder")
    else:
        set_up_country(
            folder, country="RU", agreement=agreement, amqp_url="amqp://ru-gateway@127.0.0.1:5672/ru",
            secrets_file=tmp_path / "secrets.json", now=NOW,
        )  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        _set_up(folder, agreement)
    assert caught.value.reason is Reason.CONFIG_INVALID
    assert expected in caught.value.diagnostic


def test_an_unknown_country_names_the_agreements_countries(tmp_path: Path, agreement: Agreement) -> None:
    with pytest.raises(ConfigError) as caught:
        _set_up(tmp_path / "xx", agreement, country="XX")
    assert "TJ and RU" in caught.value.diagnostic
    assert not (tmp_path / "xx").exists()


def test_a_broker_the_gateway_would_refuse_is_refused_before_anything_is_written(
    tmp_path: Path, agreement: Agreement
) -> None:
    with pytest.raises(ConfigError) as caught:
        set_up_country(
            tmp_path / "tj", country="TJ", agreement=agreement,
            amqp_url="amqp://tj-gateway@rabbit.example:5672/tj", secrets_file=tmp_path / "s.json", now=NOW,
        )  # fmt: skip
    assert caught.value.reason is Reason.CONFIG_INSECURE_TLS
    assert not (tmp_path / "tj" / "gateway.toml").exists()
    assert not (tmp_path / "tj" / "keys").exists()
