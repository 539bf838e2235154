"""The settings file is written from the model (every setting, described), its relative paths are the
file's, and the broker password comes from the secrets file, never from the settings."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from broker.core.errors import ConfigError, Reason
from broker.state.settings import ExchangeSettings
from broker.state.settings_file import render_settings

PASSWORD = "s3cret/with:odd@chars"


def test_every_setting_is_described_and_can_be_shown() -> None:
    for name, field in ExchangeSettings.model_fields.items():
        assert field.description, f"{name} has no description"
        if field.get_default(call_default_factory=True) is None and not field.is_required():
            assert isinstance(field.json_schema_extra, dict), f"{name} has neither default nor example"
            assert "example" in field.json_schema_extra


def test_the_rendered_file_names_every_setting_and_loads(tmp_path: Path) -> None:
    text = render_settings({"country": "TJ", "amqp_url": "amqp://tj-gateway@127.0.0.1:5672/tj"})
    for name, field in ExchangeSettings.model_fields.items():
        assert f"{name} = " in text, name
        assert field.description is not None
        assert field.description.split()[0] in text
    # Uncommenting every default line gives the defaults back: the comments show the real values.
    fields = set(ExchangeSettings.model_fields)
    uncommented = "\n".join(
        line.removeprefix("# ").split("   # ")[0]
        for line in text.splitlines()
        if line.startswith("# ") and line[2:].split(" = ")[0] in fields and "not set by default" not in line
    )
    defaults = tomllib.loads(uncommented)
    unset_by_default = {
        name
        for name, field in ExchangeSettings.model_fields.items()
        if field.is_required() or field.get_default(call_default_factory=True) is None
    }
    assert {"country", "amqp_url", "secrets_file"} <= unset_by_default
    assert set(defaults) == fields - unset_by_default
    required = {"country": "TJ", "amqp_url": "amqp://tj-gateway@127.0.0.1:5672/tj"}
    assert ExchangeSettings.load(None, **required, **defaults) == ExchangeSettings.load(None, **required)
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    assert ExchangeSettings.load(path) == ExchangeSettings.load(None, **required)


def test_relative_paths_in_a_file_are_the_files_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "var" / "tj"
    folder.mkdir(parents=True)
    path = folder / "gateway.toml"
    path.write_text(
        'country = "TJ"\namqp_url = "amqp://tj-gateway@127.0.0.1/tj"\nkeys_dir = "keys"\nstate_dir = ".."\n'
        f'secrets_file = "../rabbitmq-secrets.json"\nagreement_file = "{tmp_path / "agreement.toml"}"\n',
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)  # anywhere but the file's folder
    settings = ExchangeSettings.load(path)
    assert settings.keys_dir == folder.resolve() / "keys"
    assert settings.country_state_dir == folder.resolve()
    assert settings.secrets_file == tmp_path.resolve() / "var" / "rabbitmq-secrets.json"
    assert settings.agreement_file == tmp_path / "agreement.toml"
    # An override (the command line, a test) stays relative to the working directory.
    assert ExchangeSettings.load(path, keys_dir=Path("elsewhere")).keys_dir == Path("elsewhere")


def _settings(
    tmp_path: Path, secrets: object | None, url: str = "amqp://tj-gateway@127.0.0.1:5672/tj"
) -> ExchangeSettings:
    secrets_file = tmp_path / "secrets.json"
    if secrets is not None:
        secrets_file.write_text(json.dumps(secrets), encoding="utf-8")
    return ExchangeSettings.load(None, country="TJ", amqp_url=url, secrets_file=secrets_file)


def test_the_password_of_the_urls_user_comes_from_the_secrets_file(tmp_path: Path) -> None:
    settings = _settings(tmp_path, {"tj-gateway": PASSWORD, "tj-mol": "other"})
    assert settings.broker_url() == "amqp://tj-gateway:s3cret%2Fwith%3Aodd%40chars@127.0.0.1:5672/tj"
    assert settings.broker_url("tj-mol") == "amqp://tj-mol:other@127.0.0.1:5672/tj"
    assert PASSWORD not in settings.amqp_url
    written = _settings(tmp_path, None, url="amqp://tj-gateway:inline@127.0.0.1:5672/tj")
    assert written.broker_url() == "amqp://tj-gateway:inline@127.0.0.1:5672/tj"


@pytest.mark.parametrize(
    ("secrets", "expected"),
    [
        (None, "does not exist"),
        ({"tj-link": PASSWORD}, "holds no password for RabbitMQ user tj-gateway"),
        ({"tj-gateway": ""}, "holds no password for RabbitMQ user tj-gateway"),
        (["tj-gateway", PASSWORD], "holds no password"),
    ],
)
def test_a_missing_password_names_the_file_and_the_user_never_a_password(
    tmp_path: Path, secrets: object | None, expected: str
) -> None:
    settings = _settings(tmp_path, secrets)
    with pytest.raises(ConfigError) as caught:
        settings.broker_url()
    assert caught.value.reason is Reason.CONFIG_INVALID
    assert expected in caught.value.diagnostic
    assert str(tmp_path / "secrets.json") in caught.value.diagnostic
    assert "tj-gateway" in caught.value.diagnostic
    assert PASSWORD not in caught.value.diagnostic


def test_a_secrets_file_that_is_not_json_is_named(tmp_path: Path) -> None:
    settings = _settings(tmp_path, None)
    (tmp_path / "secrets.json").write_text(f"tj-gateway = {PASSWORD}", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        settings.broker_url()
    assert "not JSON" in caught.value.diagnostic
    assert PASSWORD not in caught.value.diagnostic


def test_a_user_without_password_and_no_secrets_file_is_refused() -> None:
    settings = ExchangeSettings.load(None, country="TJ", amqp_url="amqp://tj-gateway@127.0.0.1/tj")
    with pytest.raises(ConfigError, match="no secrets_file"):
        settings.broker_url()
    assert ExchangeSettings.load(None, country="TJ", amqp_url="amqp://127.0.0.1/tj").broker_url() == (
        "amqp://127.0.0.1/tj"
    )
