"""RabbitMQ passwords from RABBITMQ_PASSWORD_<USER>: what a compose service is given instead of the
whole secrets file. Each consumer of passwords (settings, topology apply, a ministry's login, a
subscriber's kit) takes the variable first and the secrets file second."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.core.errors import ConfigError, Reason
from broker.exchange.provisioning import load_passwords
from broker.exchange.submitter import submitter_login
from broker.state.rabbitmq_passwords import environment_password, password_variable
from broker.state.settings import ExchangeSettings


def test_the_variable_is_the_user_upper_cased_with_underscores() -> None:
    assert password_variable("tj-gateway") == "RABBITMQ_PASSWORD_TJ_GATEWAY"
    assert password_variable("ru-consulate.dushanbe") == "RABBITMQ_PASSWORD_RU_CONSULATE_DUSHANBE"
    assert environment_password("tj-gateway", {"RABBITMQ_PASSWORD_TJ_GATEWAY": ""}) is None
    assert environment_password("tj-gateway", {"RABBITMQ_PASSWORD_TJ_GATEWAY": "pw"}) == "pw"


def test_apply_takes_given_passwords_and_never_writes_them(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    environ = {"RABBITMQ_PASSWORD_TJ_GATEWAY": "from-env"}

    passwords = load_passwords(path, ["tj-gateway", "tj-link"], environ)

    assert passwords["tj-gateway"] == "from-env"
    kept = json.loads(path.read_text())
    assert set(kept) == {"tj-link"}  # generated, kept; the given one is not on disk
    assert kept["tj-link"] == passwords["tj-link"]


def test_apply_with_every_password_given_writes_no_file(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    environ = {"RABBITMQ_PASSWORD_A": "1", "RABBITMQ_PASSWORD_B": "2"}

    assert load_passwords(path, ["a", "b"], environ) == {"a": "1", "b": "2"}
    assert not path.exists()


def test_settings_take_the_variable_before_the_secrets_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"tj-gateway": "from-file"}))
    settings = ExchangeSettings.load(
        None, country="TJ", amqp_url="amqp://tj-gateway@127.0.0.1:5672/tj", secrets_file=secrets
    )
    assert settings.broker_url() == "amqp://tj-gateway:from-file@127.0.0.1:5672/tj"

    monkeypatch.setenv("RABBITMQ_PASSWORD_TJ_GATEWAY", "from-env")
    assert settings.broker_url() == "amqp://tj-gateway:from-env@127.0.0.1:5672/tj"


def test_settings_without_either_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RABBITMQ_PASSWORD_TJ_GATEWAY", raising=False)
    settings = ExchangeSettings.load(None, country="TJ", amqp_url="amqp://tj-gateway@127.0.0.1:5672/tj")

    with pytest.raises(ConfigError) as refused:
        settings.broker_url()
    assert refused.value.reason is Reason.CONFIG_INVALID
    assert "RABBITMQ_PASSWORD_TJ_GATEWAY" in refused.value.diagnostic


def test_a_ministry_logs_in_with_its_variable_and_no_secrets_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RABBITMQ_PASSWORD_TJ_MOL", "mol-pw")
    user, url = submitter_login(
        "amqp://tj-gateway@127.0.0.1:5672/tj",
        country="TJ",
        authority="TJ-MOL",
        secrets_file=tmp_path / "absent.json",
    )
    assert (user, url) == ("tj-mol", "amqp://tj-mol:mol-pw@127.0.0.1:5672/tj")


def test_a_ministry_without_variable_or_file_is_told_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RABBITMQ_PASSWORD_TJ_MOL", raising=False)
    with pytest.raises(ConfigError) as refused:
        submitter_login(
            "amqp://tj-gateway@127.0.0.1:5672/tj",
            country="TJ",
            authority="TJ-MOL",
            secrets_file=tmp_path / "absent.json",
        )
    assert refused.value.reason is Reason.INPUT_UNREADABLE
    assert "RABBITMQ_PASSWORD_TJ_MOL" in refused.value.diagnostic
