"""`broker quarantine show` with bytes built to attack the operator's terminal (issue 21, item 11).

The peer's bytes reach the quarantine unauthenticated. Shown, every control character must appear
escaped (`\\x1b`), never reach the terminal; `--raw FILE` keeps the exact bytes, in a 0600 file.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from structlog.testing import capture_logs
from typer.testing import CliRunner, Result

from broker.cli.app import app
from broker.core.ids import uuid7
from broker.exchange.topology import INBOUND, QUARANTINE

if TYPE_CHECKING:
    from tests.support.exchange import ExchangeHarness

pytestmark = pytest.mark.rabbitmq

# Retitles the window, clears the screen, sets a colour, an 8-bit CSI, a right-to-left override, a
# bell, and a byte that is not UTF-8.
HOSTILE = (
    b'{"id":"\x1b]0;all messages verified\x07\x1b[2J\x1b[32mOK\x1b[0m",'
    b'"x":"\xc2\x9b31m","y":"\xe2\x80\xaecod.exe","z":"\xff"}'
)
FORBIDDEN = ("\x1b", "\x07", "\x9b", "\u202e", "\ufffd")


async def run_cli(*args: str) -> Result:
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, app, list(args), env={"COLUMNS": "250"})


async def test_quarantined_escape_sequences_are_shown_escaped_and_kept_exact_with_raw(
    exchange: ExchangeHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in test_exchange: the CLI may not reconfigure the logging of the gateway running here.
    monkeypatch.setattr("broker.cli.common.configure_logging", lambda *_, **__: None)
    with capture_logs():
        await exchange.new_gateway("RU")
        await exchange.broker["RU"].publish(
            exchange=INBOUND, routing_key="ru", body=HOSTILE, message_id=str(uuid7())
        )

        async def quarantined() -> bool:
            return await exchange.ready("RU", QUARANTINE) == 1

        await exchange.wait_until(quarantined, what="the hostile bytes to be quarantined")
        [held] = await exchange.broker["RU"].peek(QUARANTINE, limit=10)
        assert held.body == HOSTILE
        message_id = held.message_id  # unreadable bytes are quarantined under their digest
        assert message_id is not None
        where = (
            "--country",
            "RU",
            "--config",
            str(exchange.dev.settings["RU"].state_dir / "ru" / "gateway.toml"),
        )

        shown = await run_cli("quarantine", "show", message_id, *where)
        raw = tmp_path / "quarantined.bin"
        kept = await run_cli("quarantine", "show", message_id, *where, "--raw", str(raw))
        piped = await run_cli("quarantine", "show", message_id, *where, "--raw", "-")
        on_a_terminal = await asyncio.to_thread(show_on_a_terminal, message_id, *where)

    assert shown.exit_code == 0, shown.output
    for char in FORBIDDEN:
        assert char not in shown.output, repr(char)
    assert "message.malformed" in shown.output
    assert "\\x1b]0;all messages verified\\x07\\x1b[2J\\x1b[32mOK\\x1b[0m" in shown.output
    assert "\\x9b31m" in shown.output
    assert "\\u202ecod.exe" in shown.output
    assert '"z":"\\xff"' in shown.output

    assert kept.exit_code == 0, kept.output
    assert "\x1b" not in kept.output
    assert raw.read_bytes() == HOSTILE
    assert stat.S_IMODE(raw.stat().st_mode) == 0o600

    assert piped.exit_code == 0, piped.output
    assert piped.stdout_bytes == HOSTILE  # a pipe gets the bytes exactly; the headers went to stderr

    code, seen = on_a_terminal
    assert code == 1
    assert "error [config.invalid] --raw - writes the exact bytes" in seen
    assert "\x1b" not in seen


def show_on_a_terminal(message_id: str, *where: str) -> tuple[int, str]:
    """`show --raw -` as a person would type it: standard output is a terminal (a pseudo-terminal)."""
    broker = Path(sys.executable).parent / "broker"
    controller, terminal = os.openpty()
    try:
        process = subprocess.run(
            [str(broker), "quarantine", "show", message_id, *where, "--raw", "-"],
            stdout=terminal,
            stderr=subprocess.PIPE,
            env={**os.environ, "COLUMNS": "250"},
            check=False,
            timeout=60,
        )
        os.close(terminal)
        terminal = -1
        seen = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal side is closed and drained
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(controller)
        if terminal != -1:
            os.close(terminal)
    return process.returncode, (seen + process.stderr).decode("utf-8", errors="replace")
