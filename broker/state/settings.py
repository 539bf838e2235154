"""One typed settings object, parsed once at start: a TOML file, overridden by EXCHANGE_* variables."""

from __future__ import annotations

import os
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import parse_qsl, urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from broker.core.errors import ConfigError, Reason
from broker.core.tls_policy import check_amqp_url, check_http_url, check_postgres_dsn

# Art. 15.5 says "immediately" for a death; a cancellation starts the Art. 14 fifteen-day clock.
DEFAULT_RECEIPT_DEADLINES_S: dict[str, float] = {
    "worker.death": 5 * 60,
    "work_permit.cancellation": 30 * 60,
    "*": 24 * 3600,
}


# The largest envelope a gateway opens; RabbitMQ's max_message_size must be above it (topology.py).
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class ExchangeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EXCHANGE_", extra="forbid", frozen=True)

    country: str = Field(pattern=r"^[A-Z]{2}$", description="the country this gateway serves")
    amqp_url: str = Field(description="this country's broker (its own vhost in development)")
    keys_dir: Path = Path("keys")
    state_dir: Path = Path("var")
    agreement_file: Path | None = Field(default=None, description="default: the shipped TJ-RU agreement")
    audit_backend: Literal["sqlite", "postgres"] = "sqlite"
    audit_dsn: str | None = Field(default=None, description="PostgreSQL DSN when audit_backend=postgres")
    prefetch: int = Field(default=64, ge=1, le=10_000)
    confirm_timeout_s: float = Field(default=10.0, gt=0)
    # Re-sent messages keep their created_at, so the window must outlast the longest retry horizon.
    max_message_age_s: float = Field(default=7 * 24 * 3600, gt=0)
    max_clock_skew_s: float = Field(default=300, ge=0)
    crl_grace_s: float = Field(
        default=7 * 24 * 3600,
        ge=0,
        description="how long past its nextUpdate a peer's newest CRL is used (with warnings) before crl.stale",
    )
    receipt_deadlines_s: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_RECEIPT_DEADLINES_S))
    resend_check_interval_s: float = Field(default=5.0, gt=0)
    checkpoint_every_entries: int = Field(
        default=1000, ge=1, description="sign a checkpoint after this many entries"
    )
    checkpoint_every_s: float = Field(default=60.0, gt=0, description="... or after this many seconds")
    checkpoint_min_interval_s: float = Field(
        default=0.05,
        ge=0,
        description="receipts needing a new checkpoint this soon after the last one share the next",
    )
    max_message_bytes: int = Field(default=DEFAULT_MAX_MESSAGE_BYTES, ge=1024)
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="serves /metrics, /healthz and /readyz"
    )
    metrics_address: str = Field(
        default="127.0.0.1", min_length=1, description="where they listen: 0.0.0.0 in a container"
    )
    management_url: str | None = Field(
        default=None,
        description="this broker's management API, where readiness reads the link's shovel status "
        "(default: the amqp_url host, http://...:15672, or https://...:15671 for amqps)",
    )
    management_ca_file: Path | None = Field(
        default=None, description="CA of the management API's certificate (default: amqp_url's cacertfile)"
    )
    log_format: Literal["console", "json"] = "console"
    # Comma-separated in EXCHANGE_PLAINTEXT_HOSTS (NoDecode: not JSON).
    plaintext_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="non-local hosts reached without verified TLS: a private network only (tls_policy)",
    )

    @field_validator("receipt_deadlines_s")
    @classmethod
    def _has_default(cls, value: dict[str, float]) -> dict[str, float]:
        return {**DEFAULT_RECEIPT_DEADLINES_S, **value}

    @field_validator("plaintext_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(host.strip() for host in value.split(",") if host.strip())
        return value

    @model_validator(mode="after")
    def _connections_verify_the_server(self) -> Self:
        # A ConfigError (not a ValueError) passes through pydantic with its own reason code.
        check_amqp_url(self.amqp_url, plaintext_hosts=self.plaintext_hosts)
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

    @property
    def country_state_dir(self) -> Path:
        return self.state_dir / self.country.lower()

    def receipt_deadline(self, message_type: str) -> timedelta:
        seconds = self.receipt_deadlines_s.get(message_type, self.receipt_deadlines_s["*"])
        return timedelta(seconds=seconds)

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: object) -> ExchangeSettings:
        """File values, then EXCHANGE_* environment variables, then explicit overrides."""
        values: dict[str, object] = {}
        if config_file is not None:
            try:
                values = tomllib.loads(config_file.read_text("utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(
                    Reason.CONFIG_INVALID, f"cannot read settings {config_file}: {exc}"
                ) from None
            values = {k: v for k, v in values.items() if f"EXCHANGE_{k.upper()}" not in os.environ}
        values.update(overrides)
        try:
            return cls(**values)  # type: ignore[arg-type]
        except ValidationError as exc:
            raise ConfigError(Reason.CONFIG_INVALID, f"invalid settings: {describe_errors(exc)}") from None
        except SettingsError as exc:  # an EXCHANGE_* variable that does not parse; names no value
            raise ConfigError(Reason.CONFIG_INVALID, f"invalid settings: {exc}") from None


def describe_errors(exc: ValidationError) -> str:
    """Each problem as `field: what is wrong`, never the value given: it may be a URL with a password."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)
