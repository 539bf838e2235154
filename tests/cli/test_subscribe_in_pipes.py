"""A consul's alerts leave `broker subscribe` whole: in a file (JSON lines, on disk before the ack) or a pipe.

`broker subscribe` runs as a user runs it, a process of its own, against the session's exchange on the
real RabbitMQ; the Russian gateway of the test sends the notices.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from broker.core.catalogue import sample_payloads
from broker.exchange.devkit import write_settings_file
from broker.exchange.gateway import Gateway
from tests.support.exchange import ExchangeHarness

pytestmark = pytest.mark.rabbitmq

BROKER = Path(sys.executable).with_name("broker")
CONSUL = "TJ-CONSULATE-MOSCOW"


async def start_subscriber(settings: Path, *extra: str) -> asyncio.subprocess.Process:
    """`broker subscribe` for the consul, returned once it says it is waiting for alerts."""
    process = await asyncio.create_subprocess_exec(
        str(BROKER), "subscribe", "--as", CONSUL, "--types", "worker.death,work_permit.cancellation",
        "--citizenship", "TJ", "--config", str(settings), *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    first = await asyncio.wait_for(process.stderr.readline(), timeout=60)
    assert first.decode().startswith(f"waiting for alerts for {CONSUL} "), first
    return process


async def finished(process: asyncio.subprocess.Process) -> tuple[str, str]:
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode(), stderr.decode()


@pytest.fixture
def consul_settings(exchange: ExchangeHarness, tmp_path: Path) -> Path:
    path = tmp_path / "tj.toml"
    write_settings_file(path, exchange.settings("TJ"))
    return path


async def test_alerts_appended_to_a_file_as_json_lines(
    exchange: ExchangeHarness, gateways: dict[str, Gateway], consul_settings: Path, tmp_path: Path
) -> None:
    await exchange.declare_ministry_subscribers()
    alerts = tmp_path / "alerts.jsonl"
    process = await start_subscriber(consul_settings, "--out", str(alerts), "--count", "2")
    death = await gateways["RU"].send(sample_payloads()["worker.death"], to="TJ-MOL")
    cancellation = await gateways["RU"].send(sample_payloads()["work_permit.cancellation"], to="TJ-MOL")

    stdout, _ = await finished(process)

    assert stdout == ""  # the alerts went to the file
    lines = alerts.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["message_id"] for line in lines] == [
        str(death.message_id),
        str(cancellation.message_id),
    ]
    assert json.loads(lines[1])["departure_deadline"] == str(
        sample_payloads()["work_permit.cancellation"].departure_deadline  # type: ignore[attr-defined]
    )
    assert alerts.stat().st_mode & 0o777 == 0o600  # personal data


async def test_alerts_in_a_pipe_are_one_line_each_with_codes_in_words(
    exchange: ExchangeHarness, gateways: dict[str, Gateway], consul_settings: Path
) -> None:
    await exchange.declare_ministry_subscribers()
    process = await start_subscriber(consul_settings, "--count", "1")
    death = await gateways["RU"].send(sample_payloads()["worker.death"], to="TJ-MOL")

    stdout, _ = await finished(process)

    [line] = stdout.splitlines()  # never wrapped at 80 columns
    assert str(death.message_id) in line
    assert len(line) > 200
    assert "repatriation of the body and belongings by the " in line  # words, not `host_state_employer`
    assert "_employer" not in line
