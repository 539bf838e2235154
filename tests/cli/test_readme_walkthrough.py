"""The README's "Operating a country", run line by line as a new operator runs it.

The commands are read from the README itself (the fenced blocks after `<!-- walkthrough: run -->` and
`<!-- walkthrough: stop -->`), never copied here: a README that drifts from the product fails this
test. They run in a fresh folder (with the repository's `schemas/` beside it, as in a checkout),
against the local RabbitMQ's vhosts `tj` and `ru`, which this test owns: it removes them before and
after. A line ending in `&` is started in the background, as a shell would, and counts as up once it
says so (`... running`, `waiting for alerts ...`); `kill %N` lines are the test stopping those.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.exchange.rabbit_admin import RabbitAdmin

pytestmark = pytest.mark.rabbitmq

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
READY = re.compile(r"gateway \S+ running|waiting for alerts")
BLOCK = re.compile(r"<!-- walkthrough: (\w+) -->\n```(?:bash|python)\n(.*?)```", re.S)
STARTUP_S = 120.0
COMMAND_S = 300.0


def readme_block(name: str) -> str:
    blocks = {match.group(1): match.group(2) for match in BLOCK.finditer((REPO / "README.md").read_text())}
    return blocks[name]


def walkthrough(name: str) -> list[str]:
    """The command lines of the README's walkthrough block `name`, comments dropped."""
    lines = [line.split("  #", 1)[0].strip() for line in readme_block(name).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def remove_walkthrough_vhosts() -> None:
    with RabbitAdmin() as admin:
        for vhost in ("tj", "ru"):
            admin.delete_vhost(vhost)


@pytest.fixture
def operator_folder(tmp_path: Path) -> Iterator[Path]:
    """A fresh working folder like a checkout's root, the vhosts free, and the path to `broker`."""
    (tmp_path / "schemas").symlink_to(REPO / "schemas")
    remove_walkthrough_vhosts()
    try:
        yield tmp_path
    finally:
        remove_walkthrough_vhosts()


class Shell:
    """Runs lines as a shell in `cwd` would: in the foreground, or in the background with `&`."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.jobs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def run(self, line: str) -> subprocess.CompletedProcess[str]:
        if line.endswith("&"):
            self.start(line.removesuffix("&").strip())
            return subprocess.CompletedProcess(line, 0, "", "")
        result = subprocess.run(
            shlex.split(line), cwd=self.cwd, env=self.env, capture_output=True, text=True,
            timeout=COMMAND_S, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"$ {line}\n{result.stdout}\n{result.stderr}"
        return result

    def start(self, line: str) -> None:
        output = self.cwd / f"job-{len(self.jobs) + 1}.log"
        with output.open("wb") as sink:
            job = subprocess.Popen(
                shlex.split(line), cwd=self.cwd, env=self.env, stdout=sink, stderr=subprocess.STDOUT
            )
        self.jobs.append((job, output))
        deadline = time.monotonic() + STARTUP_S
        while not READY.search(output.read_text(errors="replace")):
            assert job.poll() is None, f"$ {line} ended:\n{output.read_text(errors='replace')}"
            assert time.monotonic() < deadline, f"$ {line} never said it was up:\n{output.read_text()}"
            time.sleep(0.2)

    def python(self, source: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-c", source], cwd=self.cwd, env=self.env, capture_output=True, text=True,
            timeout=COMMAND_S, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
        return result

    def stop_jobs(self, *numbers: int) -> list[int | None]:
        """Ctrl-C to background jobs (all, or `%N` of `numbers`), as `kill` would end them; exit statuses."""
        chosen = [self.jobs[n - 1] for n in numbers] if numbers else self.jobs
        for job, _ in chosen:
            if job.poll() is None:
                job.send_signal(signal.SIGINT)
        statuses: list[int | None] = []
        for job, _ in chosen:
            try:
                statuses.append(job.wait(timeout=60))
            except subprocess.TimeoutExpired:
                job.kill()
                statuses.append(None)
        return statuses


def test_the_readme_walkthrough_gets_a_death_notice_to_the_consulate(operator_folder: Path) -> None:
    shell = Shell(operator_folder)
    sent: dict[str, str] = {}
    try:
        for line in walkthrough("run"):
            result = shell.run(line)
            if shlex.split(line)[:2] == ["broker", "send"]:
                answers = [json.loads(text) for text in result.stdout.splitlines()]
                assert answers[-1]["verdict"] == "accepted", result.stdout
                sent = answers[0]

        alerts = operator_folder / "moscow-alerts.jsonl"
        deadline = time.monotonic() + STARTUP_S
        while not (alerts.exists() and alerts.read_text().strip()):
            assert time.monotonic() < deadline, "the consul's alert never reached moscow-alerts.jsonl"
            time.sleep(0.2)
        [alert] = [json.loads(text) for text in alerts.read_text().splitlines()]
        assert alert["message_id"] == sent["message_id"]
        assert alert["type"] == "worker.death"
        assert alert["citizenship"] == "TJ"

        # The README's Python API example, as written: Russia's gateway embedded in a ministry system.
        assert shell.stop_jobs(2) == [0]  # `broker gateway --country RU`: one gateway per country
        embedded = shell.python(readme_block("python"))
        # It prints the message id between the gateway's own log lines (structlog writes to stdout).
        printed = [line for line in embedded.stdout.splitlines() if re.fullmatch(r"[0-9a-f-]{36}", line)]
        assert len(printed) == 1, embedded.stdout
    finally:
        statuses = shell.stop_jobs()

    assert statuses == [0, 0, 0]  # each stopped cleanly on Ctrl-C (RU's already, above)
    for line in walkthrough("stop"):
        if not line.startswith("kill "):  # the jobs were stopped above, as `kill %1 %2 %3` would
            shell.run(line)
    with RabbitAdmin() as admin:
        assert not {"tj", "ru"} & set(admin.vhosts())
