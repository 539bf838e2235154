"""The gateway.toml written for the CLI reproduces the in-process settings, overrides included."""

from __future__ import annotations

from pathlib import Path

from broker.exchange.devkit import write_settings_file
from broker.state.settings import ExchangeSettings


def test_settings_file_round_trips_overrides(tmp_path: Path) -> None:
    original = ExchangeSettings.load(
        None,
        country="TJ",
        amqp_url='amqp://tj-gateway:p"w@127.0.0.1:5672/tj',
        keys_dir=tmp_path / "keys",
        state_dir=tmp_path,
        resend_check_interval_s=0.25,
        receipt_deadlines_s={"labour_market.report": 2.0},
        prefetch=7,
    )
    path = tmp_path / "tj" / "gateway.toml"
    write_settings_file(path, original)
    assert path.stat().st_mode & 0o777 == 0o600
    assert ExchangeSettings.load(path) == original
