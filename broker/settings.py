"""One typed settings object, parsed once at start: a TOML file, overridden by EXCHANGE_* variables."""

from __future__ import annotations

import os
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from broker.errors import ConfigError, Reason

# Art. 15.5 says "immediately" for a death; a cancellation starts the Art. 14 fifteen-day clock.
DEFAULT_RECEIPT_DEADLINES_S: dict[str, float] = {
    "worker.death": 5 * 60,
    "work_permit.cancellation": 30 * 60,
    "*": 24 * 3600,
}


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
    max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    log_format: Literal["console", "json"] = "console"

    @field_validator("receipt_deadlines_s")
    @classmethod
    def _has_default(cls, value: dict[str, float]) -> dict[str, float]:
        return {**DEFAULT_RECEIPT_DEADLINES_S, **value}

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
            raise ConfigError(Reason.CONFIG_INVALID, f"invalid settings: {exc}") from None
