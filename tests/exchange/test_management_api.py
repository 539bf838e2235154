"""`broker topology` over the management HTTP API: credentials, TLS policy, errors, idempotence.

Against the local node's API (http://127.0.0.1:15672) and the session's `t-<random>-tj/ru` vhosts.
Every refusal is one line with its reason code, and no password appears in any message.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from broker.cli.topology import topology_app
from broker.core.errors import ConfigError, Reason
from broker.exchange.management_api import ApiErrors, ManagementEndpoint, path_of
from broker.exchange.rabbit_admin import RabbitAdmin
from broker.exchange.topology import CountryBroker, ShovelSpec
from tests.exchange.test_topology import in_thread
from tests.support.rabbit import RabbitLink

# `broker topology` runs in-process here: it must not reconfigure the logging of later tests.
pytestmark = pytest.mark.usefixtures("cli_keeps_test_logging")

LOCAL_API = "http://127.0.0.1:15672"


def apply(
    link: RabbitLink, tmp_path: Path, *options: str, env: dict[str, str] | None = None
) -> tuple[int, str]:
    secrets_file = tmp_path / "secrets.json"
    secrets_file.write_text(json.dumps(link.passwords), encoding="utf-8")
    arguments = ["apply", "--secrets", str(secrets_file), *options]
    arguments += ["--broker", f"tj={link.tj.url}", "--broker", f"ru={link.ru.url}"]
    result = in_thread(lambda: CliRunner().invoke(topology_app, arguments, env=env))
    return result.exit_code, result.output


def error_line(output: str) -> str:
    [line] = [line for line in output.splitlines() if line.startswith("error")]
    return line


# -- where the API is and who logs in (no server needed) ---------------------------------------------


def test_a_local_api_defaults_to_guest_and_another_host_needs_credentials() -> None:
    local = ManagementEndpoint.configure(environ={})
    assert (local.url, local.user, local.password) == (LOCAL_API, "guest", "guest")

    with pytest.raises(ConfigError) as caught:
        ManagementEndpoint.configure(environ={"RABBITMQ_ADMIN_URL": "https://rabbit.example:15671"})
    assert caught.value.reason is Reason.CONFIG_INVALID
    assert "RABBITMQ_ADMIN_USER" in caught.value.diagnostic


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://rabbit.example:15672", Reason.CONFIG_INSECURE_TLS),  # a password in clear over a network
        ("http://admin:secret@127.0.0.1:15672", Reason.CONFIG_INVALID),  # credentials in the URL
        ("ftp://127.0.0.1:15672", Reason.CONFIG_INVALID),
    ],
)
def test_management_urls_that_would_leak_or_mislead_are_refused(url: str, reason: Reason) -> None:
    environ = {"RABBITMQ_ADMIN_URL": url, "RABBITMQ_ADMIN_USER": "admin", "RABBITMQ_ADMIN_PASSWORD": "secret"}
    with pytest.raises(ConfigError) as caught:
        ManagementEndpoint.configure(environ=environ)
    assert caught.value.reason is reason
    assert "secret" not in str(caught.value)


def test_plain_http_to_a_host_on_a_private_network_only_when_allowed() -> None:
    environ = {
        "RABBITMQ_ADMIN_URL": "http://rabbitmq-tj:15672",
        "RABBITMQ_ADMIN_USER": "a",
        "RABBITMQ_ADMIN_PASSWORD": "b",
    }
    endpoint = ManagementEndpoint.configure(environ=environ, plaintext_hosts=["rabbitmq-tj"])
    assert endpoint.where == "http://rabbitmq-tj:15672"


def test_a_credentials_file_overrides_the_environment_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    good = tmp_path / "admin.json"
    good.write_text(json.dumps({"url": "https://rabbit.example:15671", "user": "ops", "password": "pw"}))
    environ = {"RABBITMQ_ADMIN_USER": "other", "RABBITMQ_ADMIN_PASSWORD": "other"}
    endpoint = ManagementEndpoint.configure(credentials_file=good, environ=environ)
    assert (endpoint.where, endpoint.user, endpoint.password) == ("https://rabbit.example:15671", "ops", "pw")

    for bad in ("not json", json.dumps(["a"]), json.dumps({"user": "u", "pasword": "typo"})):
        good.write_text(bad)
        with pytest.raises(ConfigError) as caught:
            ManagementEndpoint.configure(credentials_file=good, environ={})
        assert caught.value.reason is Reason.CONFIG_INVALID


def test_every_known_password_is_masked_in_what_the_api_says() -> None:
    errors = ApiErrors(where=LOCAL_API)
    errors.remember("p@ss/w:rd", "plain")
    said = errors.mask('"amqp://u:p%40ss%2Fw%3Ard@h/v" and plain and amqp://x:unknown@h/v and p@ss/w:rd')
    assert "p@ss" not in said
    assert "p%40ss" not in said
    assert "plain" not in said
    assert "unknown" not in said


# -- against the node's management API ----------------------------------------------------------------


@pytest.mark.rabbitmq
def test_apply_with_a_credentials_file_changes_nothing_the_second_time(
    rabbit_link: RabbitLink, tmp_path: Path
) -> None:
    credentials = tmp_path / "admin.json"
    credentials.write_text(json.dumps({"url": LOCAL_API, "user": "guest", "password": "guest"}))

    code, output = apply(rabbit_link, tmp_path, "--admin-credentials", str(credentials))

    assert code == 0, output
    assert "(0 changes)" in output


@pytest.mark.rabbitmq
def test_a_wrong_admin_password_is_forbidden_in_one_line_that_hides_it(
    rabbit_link: RabbitLink, tmp_path: Path
) -> None:
    env = {"RABBITMQ_ADMIN_USER": "guest", "RABBITMQ_ADMIN_PASSWORD": "not-the-guest-password"}
    code, output = apply(rabbit_link, tmp_path, env=env)

    assert code == 1
    line = error_line(output)
    assert line.startswith("error [transport.forbidden] management API at http://127.0.0.1:15672: ")
    assert "HTTP 401" in line
    assert "not-the-guest-password" not in output
    assert "Traceback" not in output


@pytest.mark.rabbitmq
def test_an_unreachable_api_is_unavailable_in_one_line(rabbit_link: RabbitLink, tmp_path: Path) -> None:
    code, output = apply(rabbit_link, tmp_path, env={"RABBITMQ_ADMIN_URL": "http://127.0.0.1:1"})

    assert code == 1
    assert error_line(output).startswith(
        "error [transport.unavailable] management API at http://127.0.0.1:1: "
    )
    assert "Traceback" not in output


@pytest.mark.rabbitmq
def test_a_password_changed_behind_our_back_is_set_again_then_left_alone(rabbit_link: RabbitLink) -> None:
    user = rabbit_link.tj.gateway_user
    httpx.put(
        f"{LOCAL_API}{path_of('users', user)}",
        auth=("guest", "guest"),
        json={"password": "changed-by-hand", "tags": "monitoring"},
    ).raise_for_status()
    [plan, _] = rabbit_link.plans

    first = rabbit_link.admin.provision(plan, rabbit_link.passwords)
    again = rabbit_link.admin.provision(plan, rabbit_link.passwords)

    assert first == [f"user {user} set"]
    assert again == []


@pytest.mark.rabbitmq
def test_no_user_of_the_link_has_a_tag(rabbit_link: RabbitLink) -> None:
    users = rabbit_link.admin.users()
    planned = {user for plan in rabbit_link.plans for user in plan.users}

    assert rabbit_link.tj.gateway_user in planned
    assert {user: users[user] for user in planned} == {user: [] for user in planned}


@pytest.mark.rabbitmq
def test_a_refused_shovel_definition_is_config_invalid_with_its_passwords_masked(
    rabbit_link: RabbitLink,
) -> None:
    # RabbitMQ quotes the URI it cannot parse, credentials and all, across many lines.
    broken = CountryBroker(country="ru", url=f"amqp://127.0.0.1:notaport/{rabbit_link.ru.vhost}")
    with RabbitAdmin() as admin, pytest.raises(ConfigError) as caught:
        admin.ensure_shovel(ShovelSpec(rabbit_link.tj, broken), rabbit_link.passwords)

    message = str(caught.value)
    assert caught.value.reason is Reason.CONFIG_INVALID
    assert "HTTP 400" in message
    assert "\n" not in message
    assert rabbit_link.passwords[rabbit_link.tj.link_user] not in message
    assert rabbit_link.passwords[rabbit_link.tj.shovel_user] not in message
