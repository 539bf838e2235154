"""docker-compose.yml cannot run here (no Docker engine), so its wiring is checked against the code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from typer.main import get_command

from broker.cli.app import app
from broker.state.settings import ExchangeSettings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def _services() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text("utf-8"))
    services = document["services"]
    assert isinstance(services, dict)
    return services


def _exchange_services() -> dict[str, dict[str, Any]]:
    return {
        name: spec for name, spec in _services().items() if "EXCHANGE_COUNTRY" in spec.get("environment", {})
    }


def test_two_brokers_postgres_two_gateways_and_a_consulate() -> None:
    services = _services()
    assert {"rabbitmq-tj", "rabbitmq-ru", "postgres", "gateway-tj", "gateway-ru"} <= set(services)
    commands = [spec.get("command", []) for spec in services.values()]
    assert ["gateway", "--country", "TJ"] in commands
    assert ["gateway", "--country", "RU"] in commands
    assert any(cmd[:1] == ["subscribe"] and "TJ-CONSULATE-MOSCOW" in cmd for cmd in commands)


def test_every_exchange_variable_is_a_setting_the_code_reads() -> None:
    fields = set(ExchangeSettings.model_fields)
    required = {name for name, field in ExchangeSettings.model_fields.items() if field.is_required()}
    exchange_services = _exchange_services()
    assert len(exchange_services) >= 3
    for name, spec in exchange_services.items():
        variables = {
            key.removeprefix("EXCHANGE_").lower()
            for key in spec["environment"]
            if key.startswith("EXCHANGE_")
        }
        assert variables <= fields, f"{name} sets unknown settings {variables - fields}"
        assert required <= variables, f"{name} misses required settings {required - variables}"


def test_commands_exist_in_the_cli() -> None:
    cli = get_command(app)
    names = set(cli.commands)  # type: ignore[attr-defined]
    for spec in _exchange_services().values():
        assert spec["command"][0] in names


def test_gateways_use_their_own_vhost_user_and_guest_is_never_created() -> None:
    for name, spec in _exchange_services().items():
        env = spec["environment"]
        country = env["EXCHANGE_COUNTRY"].lower()
        if spec["command"][0] == "api":
            # The API logs in as each ministry's user; the URL gives only host and vhost, no password.
            assert f"amqp://{country}-gateway@" in env["EXCHANGE_AMQP_URL"], name
        else:
            assert f"amqp://{country}-gateway:" in env["EXCHANGE_AMQP_URL"], name
        assert env["EXCHANGE_AMQP_URL"].endswith(f"/{country}"), name
    for broker in ("rabbitmq-tj", "rabbitmq-ru"):
        env = _services()[broker]["environment"]
        assert env["RABBITMQ_DEFAULT_USER"].startswith("${"), "admin user comes from secrets, not guest"


def test_gateway_settings_from_compose_parse() -> None:
    for spec in _exchange_services().values():
        env = {
            key.removeprefix("EXCHANGE_").lower(): value.replace("${", "").replace("}", "")
            for key, value in spec["environment"].items()
        }
        settings = ExchangeSettings.load(None, **env)
        assert settings.country == spec["environment"]["EXCHANGE_COUNTRY"]


def test_each_gateway_has_an_http_api_reading_its_state() -> None:
    services = _services()
    for country in ("tj", "ru"):
        api, gateway = services[f"api-{country}"], services[f"gateway-{country}"]
        assert api["command"] == ["api", "serve", "--country", country.upper()]
        state = f"state-{country}:/var/lib/exchange"
        assert state in api["volumes"]
        assert state in gateway["volumes"]
        assert api["environment"]["EXCHANGE_SECRETS_FILE"].startswith("/run/secrets/")
