"""One typed settings object, parsed once at start: a TOML file, overridden by EXCHANGE_* variables."""

from __future__ import annotations

import json
import os
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from broker.core.agreement_set import AgreementSet, is_agreement_path, load_agreements
from broker.core.errors import ConfigError, Reason
from broker.core.tls_policy import check_amqp_url, check_http_url, check_postgres_dsn
from broker.state.rabbitmq_passwords import environment_password, password_variable

# Art. 15.5 says "immediately" for a death; a cancellation starts the Art. 14 fifteen-day clock.
DEFAULT_RECEIPT_DEADLINES_S: dict[str, float] = {
    "worker.death": 5 * 60,
    "work_permit.cancellation": 30 * 60,
    "*": 24 * 3600,
}


# The largest envelope a gateway opens; RabbitMQ's max_message_size must be above it (topology.py).
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class ExchangeSettings(BaseSettings):
    """Every setting of a gateway. Each field's description is what `broker init` writes above it."""

    model_config = SettingsConfigDict(env_prefix="EXCHANGE_", extra="forbid", frozen=True)

    country: str = Field(pattern=r"^[A-Z]{2}$", description="The country this gateway serves (TJ, RU or UZ).")
    amqp_url: str = Field(
        description="This country's RabbitMQ: amqp[s]://user@host:port/vhost. The user is the gateway "
        "user `broker topology apply` made for the vhost (<vhost>-gateway); its password comes from "
        "secrets_file, so none needs to be written here. Any host but this one needs amqps:// with a "
        "verified certificate.",
    )
    keys_dir: Path = Field(
        default=Path("keys"),
        description="The key store: this country's CA, its authorities' keys, the peer's imported "
        "bundle (`broker keys ...`).",
    )
    state_dir: Path = Field(
        default=Path("var"),
        description="The folder holding this country's state folder <state_dir>/<country>: audit log, "
        "outbox, key vault, subscriber ledgers.",
    )
    agreement_file: Path | None = Field(
        default=None,
        description="The agreement (authorities, who may send what to whom). Not set: the first shipped "
        "agreement naming the country (TJ and RU: the TJ-RU agreement of 2004; UZ: the TJ-UZ plan of 2021).",
        json_schema_extra={"example": "agreement.toml"},
    )
    agreements: tuple[str, ...] = Field(
        default=(),
        description="Every agreement this gateway serves, one per peer country: shipped ids "
        '("tj-ru-2004", "tj-uz-2021") or paths of agreement files (a renewed period, a new agreement). '
        "Not set: agreement_file alone.",
        json_schema_extra={"example": ["tj-ru-2004", "tj-uz-2021"]},
    )
    audit_backend: Literal["sqlite", "postgres"] = Field(
        default="sqlite",
        description='Where the audit log lives: "sqlite" (a file in the state folder) or "postgres".',
    )
    audit_dsn: str | None = Field(
        default=None,
        description='The PostgreSQL DSN when audit_backend = "postgres"; TLS with verification to any '
        "host but this one.",
        json_schema_extra={"example": "postgresql://audit@db.example:5432/exchange?sslmode=verify-full"},
    )
    prefetch: int = Field(
        default=64, ge=1, le=10_000, description="Inbound messages handled at once (the consumer's prefetch)."
    )
    confirm_timeout_s: float = Field(
        default=10.0, gt=0, description="Seconds to wait for the broker to confirm a publish."
    )
    # Re-sent messages keep their created_at, so the window must outlast the longest retry horizon.
    max_message_age_s: float = Field(
        default=7 * 24 * 3600,
        gt=0,
        description="A message created longer ago than this is refused (replay.stale).",
    )
    max_clock_skew_s: float = Field(
        default=300,
        ge=0,
        description="A message dated further in the future than this is refused (replay.stale).",
    )
    crl_grace_s: float = Field(
        default=7 * 24 * 3600,
        ge=0,
        description="How long past its nextUpdate a peer's newest CRL is used (with warnings) before "
        "its messages are refused (crl.stale).",
    )
    receipt_deadlines_s: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_RECEIPT_DEADLINES_S),
        description='Seconds to wait for a receipt before re-sending, by message type; "*" for the rest.',
    )
    resend_check_interval_s: float = Field(
        default=5.0, gt=0, description="How often the outbox is checked for messages past their deadline."
    )
    resend_backoff_max_s: float = Field(
        default=3600.0,
        gt=0,
        description="Re-sends back off: each waits twice as long as the one before, from the type's "
        "receipt deadline up to this (a deadline longer than this is kept as it is).",
    )
    standby_poll_s: float = Field(
        default=2.0,
        gt=0,
        description="A standby gateway tries the audit log's writer lock this often, and the active "
        "one checks it still holds it: the longest wait before a standby takes over.",
    )
    checkpoint_every_entries: int = Field(
        default=1000, ge=1, description="Sign an audit checkpoint after this many entries..."
    )
    checkpoint_every_s: float = Field(default=60.0, gt=0, description="... or after this many seconds.")
    checkpoint_min_interval_s: float = Field(
        default=0.05,
        ge=0,
        description="Receipts needing a new checkpoint this soon after the last one share the next.",
    )
    max_message_bytes: int = Field(
        default=DEFAULT_MAX_MESSAGE_BYTES,
        ge=1024,
        description="The largest envelope opened (message.oversized above); RabbitMQ's "
        "max_message_size must be larger (`broker topology apply` checks).",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Serve /metrics, /healthz and /readyz at this port. Not set: no status server.",
        json_schema_extra={"example": 9100},
    )
    metrics_address: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Where the status server listens: 0.0.0.0 in a container.",
    )
    management_url: str | None = Field(
        default=None,
        description="Not read since readiness judges the link by the shovel's consumer (kept so that "
        "files setting it still load): this broker's management API (default: the amqp_url host, "
        "http://...:15672, or https://...:15671 for amqps).",
        json_schema_extra={"example": "https://rabbit.tj.example:15671"},
    )
    management_ca_file: Path | None = Field(
        default=None,
        description="Not read either (kept so that files setting it still load): CA of the "
        "management API's certificate (default: amqp_url's cacertfile).",
        json_schema_extra={"example": "/etc/exchange/rabbitmq-ca.pem"},
    )
    log_format: Literal["console", "json"] = Field(
        default="console", description='Log lines for a person ("console") or a collector ("json").'
    )
    # Comma-separated in EXCHANGE_AMQP_FAILOVER_HOSTS (NoDecode: not JSON).
    amqp_failover_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="The other nodes of this country's RabbitMQ cluster, host:port each: the gateway "
        "reconnects to the next one when its node goes away (same user, vhost and TLS as amqp_url).",
        json_schema_extra={"example": "rabbit-2.tj.example:5671,rabbit-3.tj.example:5671"},
    )
    # Comma-separated in EXCHANGE_PLAINTEXT_HOSTS (NoDecode: not JSON).
    plaintext_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Non-local hosts reached without verified TLS: a private network only (tls_policy).",
    )

    # --- operating a country: credentials and key reloads (issue 13) ---
    secrets_file: Path | None = Field(
        default=None,
        description="A JSON object of RabbitMQ user -> password, kept 0600 (what `broker topology "
        "apply --secrets FILE` writes). It gives the password of amqp_url's user when the URL has none "
        "and no RABBITMQ_PASSWORD_<USER> variable does (broker.state.rabbitmq_passwords).",
        json_schema_extra={"example": "../rabbitmq-secrets.json"},
    )
    keys_reload_interval_s: float = Field(
        default=5.0,
        ge=0,
        description="How often a running gateway looks for changes in its key store (a new or rotated "
        "key, an imported bundle, a revocation) and takes them in without a restart; 0: never.",
    )

    # --- the HTTP API for ministry systems (`broker api serve`, docs/http-api.md) ---
    api_address: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Where the HTTP API listens: 0.0.0.0 in a container, behind a TLS-terminating proxy.",
    )
    api_port: int = Field(default=8480, ge=1, le=65535, description="The HTTP API's port.")
    api_tokens_file: Path | None = Field(
        default=None,
        description="SHA-256 hashes of the API's bearer tokens and the authority each acts as, kept "
        "0600 (`broker api token issue` adds one). Not set: api-tokens.json in the country's state folder.",
        json_schema_extra={"example": "api-tokens.json"},
    )
    api_requests_per_s: float = Field(
        default=50.0, gt=0, description="Requests per second each calling authority may make on average..."
    )
    api_burst: int = Field(default=200, ge=1, description="... and at once (429 api.rate_limited beyond).")
    api_request_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="A request that takes longer is answered 504 api.timeout (long polls wait less).",
    )

    @field_validator("receipt_deadlines_s")
    @classmethod
    def _has_default(cls, value: dict[str, float]) -> dict[str, float]:
        return {**DEFAULT_RECEIPT_DEADLINES_S, **value}

    @field_validator("plaintext_hosts", "amqp_failover_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(host.strip() for host in value.split(",") if host.strip())
        return value

    @model_validator(mode="after")
    def _connections_verify_the_server(self) -> Self:
        # A ConfigError (not a ValueError) passes through pydantic with its own reason code.
        check_amqp_url(self.amqp_url, plaintext_hosts=self.plaintext_hosts)
        for url in self.failover_urls(self.amqp_url):
            check_amqp_url(url, plaintext_hosts=self.plaintext_hosts)
        check_http_url(self.management_api_url, plaintext_hosts=self.plaintext_hosts)
        if self.audit_dsn is not None:
            check_postgres_dsn(self.audit_dsn, plaintext_hosts=self.plaintext_hosts, environ=os.environ)
        return self

    @property
    def management_api_url(self) -> str:
        if self.management_url:
            return self.management_url
        parts = urlsplit(self.amqp_url)
        host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
        return f"https://{host}:15671" if parts.scheme == "amqps" else f"http://{host}:15672"

    @property
    def management_api_ca_file(self) -> Path | None:
        if self.management_ca_file is not None:
            return self.management_ca_file
        query = dict(parse_qsl(urlsplit(self.amqp_url).query))
        cafile = query.get("cacertfile") or query.get("cafile")
        return Path(cafile) if cafile else None

    def agreement_set(self) -> AgreementSet:
        """The agreements this country's gateway serves (`agreements`, else `agreement_file`)."""
        return load_agreements(self.country, self.agreements, default=self.agreement_file)

    @property
    def country_state_dir(self) -> Path:
        return self.state_dir / self.country.lower()

    @property
    def api_tokens_path(self) -> Path:
        return self.api_tokens_file or self.country_state_dir / "api-tokens.json"

    def receipt_deadline(self, message_type: str) -> timedelta:
        seconds = self.receipt_deadlines_s.get(message_type, self.receipt_deadlines_s["*"])
        return timedelta(seconds=seconds)

    def resend_interval(self, message_type: str, copies: int) -> timedelta:
        """How long to wait for a receipt after the `copies`-th copy went out: the type's deadline,
        doubled with each copy after the first, up to `resend_backoff_max_s` (or the deadline itself,
        when that is longer)."""
        deadline = self.receipt_deadline(message_type)
        cap = max(deadline, timedelta(seconds=self.resend_backoff_max_s))
        return min(deadline * (1 << min(max(copies - 1, 0), 32)), cap)

    def failover_urls(self, url: str) -> list[str]:
        """`url` (amqp_url or broker_url's answer) on each of `amqp_failover_hosts`."""
        parts = urlsplit(url)
        credentials = parts.netloc.rpartition("@")[0]
        return [
            urlunsplit((parts.scheme, f"{credentials}@{host}" if credentials else host, *parts[2:]))
            for host in self.amqp_failover_hosts
        ]

    def broker_url(self, user: str | None = None) -> str:
        """amqp_url as a connection uses it: with the password of its user (or of `user`, replacing
        the URL's) from secrets_file when the URL carries none."""
        parts = urlsplit(self.amqp_url)
        name = user if user is not None else unquote(parts.username or "")
        if not name or (user is None and parts.password is not None):
            return self.amqp_url
        password = self.password_for(name)
        host = parts.netloc.rpartition("@")[2]
        netloc = f"{quote(name, safe='')}:{quote(password, safe='')}@{host}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def password_for(self, user: str) -> str:
        """The RabbitMQ password of `user`: its RABBITMQ_PASSWORD_<USER> variable, else secrets_file;
        a ConfigError naming the file and the user (never a password) when there is none."""
        given = environment_password(user)
        if given is not None:
            return given
        where = self.secrets_file
        if where is None:
            raise ConfigError(
                Reason.CONFIG_INVALID,
                f"amqp_url names RabbitMQ user {user} without a password, no secrets_file is set and "
                f"{password_variable(user)} is not set",
            )
        try:
            passwords = json.loads(where.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                Reason.CONFIG_INVALID,
                f"no password for RabbitMQ user {user}: secrets file {where} does not exist "
                "(`broker topology apply --secrets FILE` writes it)",
            ) from None
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not JSON"
            raise ConfigError(Reason.CONFIG_INVALID, f"cannot read secrets file {where}: {reason}") from None
        password = passwords.get(user) if isinstance(passwords, dict) else None
        if not isinstance(password, str) or not password:
            raise ConfigError(
                Reason.CONFIG_INVALID, f"secrets file {where} holds no password for RabbitMQ user {user}"
            )
        return password

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: object) -> ExchangeSettings:
        """File values, then EXCHANGE_* environment variables, then explicit overrides.

        A relative path written in the file is relative to the file's own folder (so a country's
        folder can be moved whole); one from a default, the environment or an override, to the
        working directory.
        """
        values: dict[str, object] = {}
        if config_file is not None:
            try:
                text = config_file.read_text("utf-8")
            except OSError as exc:
                raise ConfigError(
                    Reason.CONFIG_INVALID, f"cannot read settings {config_file}: {exc.strerror}"
                ) from None
            values = cls.file_values(text, folder=config_file.parent, source=str(config_file))
        values.update(overrides)
        try:
            return cls(**values)  # type: ignore[arg-type]
        except ValidationError as exc:
            raise ConfigError(Reason.CONFIG_INVALID, f"invalid settings: {describe_errors(exc)}") from None
        except SettingsError as exc:  # an EXCHANGE_* variable that does not parse; names no value
            raise ConfigError(Reason.CONFIG_INVALID, f"invalid settings: {exc}") from None

    @classmethod
    def file_values(cls, text: str, *, folder: Path, source: str) -> dict[str, object]:
        """The values a settings file sets (those an EXCHANGE_* variable overrides left out), with
        relative paths resolved against `folder`."""
        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(Reason.CONFIG_INVALID, f"cannot read settings {source}: {exc}") from None
        values = {k: v for k, v in values.items() if f"EXCHANGE_{k.upper()}" not in os.environ}
        for name in _PATH_FIELDS:
            value = values.get(name)
            if isinstance(value, str) and value and not Path(value).is_absolute():
                values[name] = str((folder / value).resolve())
        entries = values.get("agreements")
        if isinstance(entries, list):  # agreement files named beside shipped ids: the same rule
            values["agreements"] = [
                str((folder / e).resolve())
                if isinstance(e, str) and is_agreement_path(e) and not Path(e).is_absolute()
                else e
                for e in entries
            ]
        return values


_PATH_FIELDS = tuple(
    name for name, field in ExchangeSettings.model_fields.items() if field.annotation in (Path, Path | None)
)


def describe_errors(exc: ValidationError) -> str:
    """Each problem as `field: what is wrong`, never the value given: it may be a URL with a password."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)
