"""`broker send` as a user runs it: the installed console script, its output a pipe, against the real
RabbitMQ, while the country's gateway runs (in this test's process).

It used to embed a second gateway that consumed the sender's `inbound` queue: with `broker gateway`
running, the receipt went to the gateway and `send` waited silently until the type's deadline.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

import pytest

from broker.core.catalogue import sample_payloads
from broker.exchange.devkit import write_settings_file
from broker.exchange.gateway import Gateway
from tests.cli.test_error_path import BROKER, broker, one_error_line

if TYPE_CHECKING:
    from tests.support.exchange import ExchangeHarness

pytestmark = pytest.mark.rabbitmq

# Generous: a bound on a hang, never a measure of speed.
PROCESS_LIMIT_S = 120.0


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


@dataclass(frozen=True)
class Cli:
    """`broker send` pointed at one country of the test's exchange."""

    cwd: Path
    config: Path
    secrets: Path
    death: Path

    def send_args(self, *extra: str) -> list[str]:
        return ["send", "--country", "RU", "--config", str(self.config), "--secrets", str(self.secrets),
                "--type", "worker.death", "--file", str(self.death), "--to", "TJ-MOL", *extra]  # fmt: skip

    async def run(self, *args: str) -> Ran:
        process = await asyncio.create_subprocess_exec(
            str(BROKER), *args, cwd=self.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = await asyncio.wait_for(process.communicate(), PROCESS_LIMIT_S)
        assert process.returncode is not None
        return Ran(process.returncode, out.decode(), err.decode())


@pytest.fixture
def cli(exchange: ExchangeHarness, tmp_path: Path) -> Cli:
    """Settings of RU as the gateways of this test use them, and the passwords `topology apply` keeps."""
    config = tmp_path / "ru.toml"
    write_settings_file(config, exchange.settings("RU"))
    secrets = tmp_path / "rabbitmq-secrets.json"
    secrets.write_text(json.dumps(exchange.dev.passwords), encoding="utf-8")
    secrets.chmod(0o600)  # as `topology apply` keeps it
    death = tmp_path / "death.json"
    death.write_text(sample_payloads()["worker.death"].model_dump_json(), encoding="utf-8")
    return Cli(cwd=tmp_path, config=config, secrets=secrets, death=death)


async def test_send_returns_accepted_while_both_gateways_run(
    cli: Cli, exchange: ExchangeHarness, gateways: dict[str, Gateway]
) -> None:
    ran = await cli.run(*cli.send_args())

    assert ran.returncode == 0, ran.stderr
    sent, verdict = ran.json_lines()
    assert (sent["sender"], sent["to"], sent["type"]) == ("RU-MVD", "TJ-MOL", "worker.death")
    assert (verdict["message_id"], verdict["verdict"]) == (sent["message_id"], "accepted")
    assert "waiting for receipt" in ran.stderr
    assert "error" not in ran.stderr
    # The running gateways did the work: the RU gateway's outbox, the TJ gateway's log.
    record = await gateways["RU"].outbox.get(_uuid(sent["message_id"]))
    assert record is not None
    assert record.state == "receipted"

    status = await cli.run("status", str(sent["message_id"]), "--country", "RU", "--config", str(cli.config))
    assert status.returncode == 0, status.stderr
    assert "receipted" in status.stdout


async def test_send_no_wait_prints_the_id_and_leaves_the_rest_to_the_gateway(
    cli: Cli, exchange: ExchangeHarness, gateways: dict[str, Gateway]
) -> None:
    ran = await cli.run(*cli.send_args("--no-wait"))

    assert ran.returncode == 0, ran.stderr
    [sent] = ran.json_lines()
    assert "verdict" not in sent
    message_id = _uuid(sent["message_id"])

    async def receipted() -> bool:
        record = await gateways["RU"].outbox.get(message_id)
        return record is not None and record.state == "receipted"

    await exchange.wait_until(receipted, what="the receipt, after send returned")


async def test_send_gives_up_waiting_after_its_timeout_and_names_the_status_command(
    cli: Cli, exchange: ExchangeHarness
) -> None:
    await exchange.new_gateway("RU")  # no TJ gateway: no receipt will come

    ran = await cli.run(*cli.send_args("--timeout", "1"))

    assert ran.returncode == 1
    [sent] = ran.json_lines()
    line = ran.stderr.strip().splitlines()[-1]
    assert line.startswith("error [receipt.pending] ")
    assert f"broker status {sent['message_id']} --country RU --config {cli.config}" in line


async def test_send_interrupted_names_the_message_and_the_status_command(
    cli: Cli, exchange: ExchangeHarness
) -> None:
    await exchange.new_gateway("RU")  # no TJ gateway: it would wait for the receipt
    process = await asyncio.create_subprocess_exec(
        str(BROKER), *cli.send_args(), cwd=cli.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    first = await asyncio.wait_for(process.stdout.readline(), PROCESS_LIMIT_S)
    message_id = json.loads(first)["message_id"]

    process.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(process.communicate(), PROCESS_LIMIT_S)

    assert process.returncode == 130
    assert f"broker status {message_id} --country RU" in err.decode()
    assert "Traceback" not in err.decode()


async def test_send_without_a_gateway_says_so_instead_of_hanging(cli: Cli, exchange: ExchangeHarness) -> None:
    ran = await cli.run(*cli.send_args())

    assert ran.returncode == 1
    assert "broker gateway --country RU" in one_error_line(_completed(ran), "submission.no_gateway")
    assert await exchange.ready("RU", "submit") == 0  # nothing left behind to be sent later


async def test_send_refused_by_the_gateway_is_one_error_line(
    cli: Cli, exchange: ExchangeHarness, gateways: dict[str, Gateway]
) -> None:
    ran = await cli.run(*cli.send_args("--sender", "RU-MINTRUD"))

    assert ran.returncode == 1
    assert "Art. 15.5" in one_error_line(_completed(ran), "policy.sender_not_allowed")
    assert await gateways["RU"].outbox.records() == []


async def test_send_with_a_wrong_password_is_forbidden(cli: Cli, exchange: ExchangeHarness) -> None:
    user = exchange.dev.brokers["RU"].submitter_user("RU-MVD")
    cli.secrets.write_text(json.dumps({user: "wrong"}), encoding="utf-8")

    ran = await cli.run(*cli.send_args())

    assert ran.returncode == 1
    one_error_line(_completed(ran), "transport.forbidden")


@pytest.mark.parametrize(
    ("extra", "code", "named"),
    [
        (("--sender", "RU-GW"), "policy.submitter_not_allowed", "RU-MVD, RU-MINTRUD"),
        (("--to", "tj-mol"), "submission.malformed", "to"),
        (("--request-id", "with space"), "submission.malformed", "request_id"),
        (("--secrets", "nosuch.json"), "input.unreadable", "nosuch.json"),
        (("--secrets", "empty.json"), "config.invalid", "ru-mvd"),
        (("--secrets", "list.json"), "config.invalid", "list.json"),
    ],
)
def test_send_names_what_is_wrong_before_it_connects(
    tmp_path: Path, extra: tuple[str, ...], code: str, named: str
) -> None:
    config = tmp_path / "ru.toml"
    config.write_text('country = "RU"\namqp_url = "amqp://127.0.0.1:1/ru"\n', encoding="utf-8")
    (tmp_path / "empty.json").write_text("{}", encoding="utf-8")
    (tmp_path / "list.json").write_text("[]", encoding="utf-8")
    (tmp_path / "secrets.json").write_text(json.dumps({"ru-mvd": "x"}), encoding="utf-8")
    death = tmp_path / "death.json"
    death.write_text(sample_payloads()["worker.death"].model_dump_json(), encoding="utf-8")

    result = broker("send", "--country", "RU", "--config", str(config), "--secrets", "secrets.json",
                    "--type", "worker.death", "--file", str(death), "--to", "TJ-MOL", *extra,
                    cwd=tmp_path)  # fmt: skip

    assert result.returncode == 1
    assert named in one_error_line(result, code)


def _completed(ran: Ran) -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess([], ran.returncode, ran.stdout, ran.stderr)


def _uuid(value: object) -> UUID:
    return UUID(str(value))
