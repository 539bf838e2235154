"""Settings errors never print a secret, and settings refuse connections that would not verify the server.

Security review (issue 21), items 6 and 8. A typo in the settings file used to print pydantic's
`input_value`, so the AMQP URL with its password reached the terminal. And a gateway started with
`amqp://` or a PostgreSQL DSN without `sslmode=verify-full` to another host sent its password over
a connection anyone on the path could read or answer.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from broker.core.errors import ConfigError, Reason
from broker.state.settings import ExchangeSettings

SECRET = "S3cretPw9"
# Short enough that pydantic's error text would show it whole (it elides the middle of long values).
GOOD_URL = f"amqp://gw:{SECRET}@127.0.0.1/tj"
BROKER_CLI = Path(sys.executable).parent / "broker"

# A typo'd name, a wrong type, and a value of the wrong shape: each carries the secret.
BAD_FILES = {
    "typo in a field name": f'country = "TJ"\namqp_ulr = "{GOOD_URL}"\namqp_url = "{GOOD_URL}"\n',
    "URL given as a list": f'country = "TJ"\namqp_url = ["{GOOD_URL}"]\n',
    "DSN in a number field": f'country = "TJ"\namqp_url = "{GOOD_URL}"\nprefetch = "{GOOD_URL}"\n',
    "unknown backend": f'country = "TJ"\namqp_url = "{GOOD_URL}"\naudit_backend = "{GOOD_URL}"\n',
}


def _refused(**values: object) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        ExchangeSettings.load(None, **values)
    return caught.value


@pytest.mark.parametrize("content", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_settings_error_names_the_field_but_never_the_value(tmp_path: Path, content: str) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(content, encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        ExchangeSettings.load(path)

    assert caught.value.reason is Reason.CONFIG_INVALID
    assert SECRET not in str(caught.value)
    assert "gw:" not in str(caught.value)
    assert any(
        name in caught.value.diagnostic for name in ("amqp_ulr", "amqp_url", "prefetch", "audit_backend")
    )


@pytest.mark.parametrize("content", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_the_gateway_command_prints_one_line_without_the_secret(tmp_path: Path, content: str) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(content, encoding="utf-8")

    result = subprocess.run(
        [str(BROKER_CLI), "gateway", "--country", "TJ", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )

    assert result.returncode == 1
    assert SECRET not in result.stdout + result.stderr
    assert result.stderr.strip().startswith("error [config.invalid] invalid settings:")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # no traceback


INSECURE = {
    "plaintext AMQP to another host": {"amqp_url": f"amqp://u:{SECRET}@rabbit.example:5672/tj"},
    "AMQPS with verification off": {"amqp_url": f"amqps://u:{SECRET}@rabbit.example/tj?no_verify_ssl=1"},
    "PostgreSQL without sslmode (asyncpg: prefer)": {
        "audit_dsn": f"postgresql://u:{SECRET}@db.example:5432/audit"
    },
    "PostgreSQL sslmode=require (no verification)": {
        "audit_dsn": f"postgresql://u:{SECRET}@db.example/audit?sslmode=require"
    },
    "PostgreSQL sslmode=verify-ca (no host name check)": {
        "audit_dsn": f"postgresql://u:{SECRET}@db.example/audit?sslmode=verify-ca&sslrootcert=/ca.pem"
    },
    "PostgreSQL: second host of a list": {
        "audit_dsn": f"postgresql://u:{SECRET}@127.0.0.1:5432,db.example:5432/audit"
    },
    "plaintext cluster node on another host": {
        "amqp_url": f"amqp://u:{SECRET}@127.0.0.1:5672/tj",
        "amqp_failover_hosts": "rabbit-2.example:5672",
    },
    "management API in clear to another host": {
        "amqp_url": f"amqps://u:{SECRET}@rabbit.example/tj?cafile=/ca.pem",
        "management_url": "http://rabbit.example:15672",
    },
}


@pytest.mark.parametrize("values", INSECURE.values(), ids=INSECURE.keys())
def test_a_connection_that_would_not_verify_the_server_is_refused(values: dict[str, str]) -> None:
    error = _refused(**{"country": "TJ", "amqp_url": "amqp://127.0.0.1/tj", **values})

    assert error.reason is Reason.CONFIG_INSECURE_TLS
    assert SECRET not in str(error)
    assert "example" in error.diagnostic  # names the host


SECURE = {
    "local plaintext": {
        "amqp_url": "amqp://u:p@127.0.0.1:5672/tj",
        "audit_dsn": "postgresql://u:p@localhost/a",
    },
    "IPv6 loopback": {"amqp_url": "amqp://u:p@[::1]:5672/tj"},
    "verified AMQPS": {"amqp_url": "amqps://u:p@rabbit.example:5671/tj?cafile=/etc/ca.pem"},
    "verified AMQPS on a cluster": {
        "amqp_url": "amqps://u:p@rabbit-1.example:5671/tj?cafile=/etc/ca.pem",
        "amqp_failover_hosts": "rabbit-2.example:5671,rabbit-3.example:5671",
    },
    "verify-full PostgreSQL": {
        "audit_dsn": "postgresql://u:p@db.example/audit?sslmode=verify-full&sslrootcert=/etc/ca.pem"
    },
    "Unix socket PostgreSQL": {"audit_dsn": "postgresql://u:p@/audit?host=/var/run/postgresql"},
    "listed private hosts": {
        "amqp_url": "amqp://u:p@rabbitmq-tj:5672/tj",
        "audit_dsn": "postgresql://u:p@postgres:5432/audit",
        "plaintext_hosts": "rabbitmq-tj, postgres",
    },
}


@pytest.mark.parametrize("values", SECURE.values(), ids=SECURE.keys())
def test_local_verified_or_explicitly_listed_connections_are_accepted(values: dict[str, str]) -> None:
    settings = ExchangeSettings.load(None, **{"country": "TJ", "amqp_url": "amqp://127.0.0.1/tj", **values})
    assert settings.amqp_url


def test_the_management_api_follows_the_broker_unless_named() -> None:
    verified = ExchangeSettings.load(
        None, country="TJ", amqp_url="amqps://u:p@rabbit.example:5671/tj?cacertfile=/etc/ca.pem"
    )
    private = ExchangeSettings.load(
        None, country="TJ", amqp_url="amqp://u:p@rabbitmq-tj/tj", plaintext_hosts="rabbitmq-tj"
    )
    named = ExchangeSettings.load(
        None,
        country="TJ",
        amqp_url="amqp://u:p@127.0.0.1/tj",
        management_url="https://mgmt.example",
        management_ca_file="/etc/mgmt-ca.pem",
    )

    assert (verified.management_api_url, verified.management_api_ca_file) == (
        "https://rabbit.example:15671",
        Path("/etc/ca.pem"),
    )
    assert (private.management_api_url, private.management_api_ca_file) == ("http://rabbitmq-tj:15672", None)
    assert (named.management_api_url, named.management_api_ca_file) == (
        "https://mgmt.example",
        Path("/etc/mgmt-ca.pem"),
    )


def test_plaintext_hosts_come_comma_separated_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXCHANGE_PLAINTEXT_HOSTS", "rabbitmq-ru,postgres")
    settings = ExchangeSettings.load(None, country="RU", amqp_url="amqp://u:p@rabbitmq-ru:5672/ru")
    assert settings.plaintext_hosts == ("rabbitmq-ru", "postgres")
    monkeypatch.delenv("EXCHANGE_PLAINTEXT_HOSTS")
    assert (
        _refused(country="RU", amqp_url="amqp://u:p@rabbitmq-ru:5672/ru").reason is Reason.CONFIG_INSECURE_TLS
    )


def test_pgsslmode_from_the_environment_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """asyncpg reads PGSSLMODE when the DSN has no sslmode: so does the check."""
    dsn = "postgresql://u:p@db.example/audit?sslrootcert=/etc/ca.pem"
    monkeypatch.setenv("PGSSLMODE", "verify-full")
    ExchangeSettings.load(None, country="TJ", amqp_url="amqp://127.0.0.1/tj", audit_dsn=dsn)
    monkeypatch.setenv("PGSSLMODE", "require")
    error = _refused(country="TJ", amqp_url="amqp://127.0.0.1/tj", audit_dsn=dsn)
    assert error.reason is Reason.CONFIG_INSECURE_TLS


def test_a_cluster_s_other_nodes_carry_the_user_vhost_and_tls_of_the_first() -> None:
    settings = ExchangeSettings.load(
        None,
        country="TJ",
        amqp_url="amqps://gw@rabbit-1.example:5671/tj?cacertfile=/etc/ca.pem",
        amqp_failover_hosts="rabbit-2.example:5671, rabbit-3.example:5671",
    )
    assert settings.amqp_failover_hosts == ("rabbit-2.example:5671", "rabbit-3.example:5671")
    assert settings.failover_urls("amqps://gw:pw@rabbit-1.example:5671/tj?cacertfile=/etc/ca.pem") == [
        "amqps://gw:pw@rabbit-2.example:5671/tj?cacertfile=/etc/ca.pem",
        "amqps://gw:pw@rabbit-3.example:5671/tj?cacertfile=/etc/ca.pem",
    ]
