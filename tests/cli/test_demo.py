"""`broker demo`, the README's main command, against the local RabbitMQ (vhosts `tj` and `ru`).

It must end with every receipt accepted, and `broker status <id>` must then show the trail of a
message it sent. Without RabbitMQ the demo raises, so this test fails rather than skips.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from rich.console import Console
from structlog.testing import capture_logs
from typer.testing import CliRunner

from broker.cli.app import app
from broker.cli.demo import ROUTES, run_demo

pytestmark = pytest.mark.rabbitmq

# Columns of the summary table: type, direction, verdict, receipt latency, audit index, message id.
COLUMNS = 6


def summary_rows(printed: str) -> list[list[str]]:
    """Cells of the body rows of the demo's summary table (rich draws them between `│`)."""
    rows = []
    for line in printed.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if line.lstrip().startswith("│") and len(cells) == COLUMNS and cells[0] != "type":
            rows.append(cells)
    return rows


def test_demo_ends_with_every_receipt_accepted_and_status_shows_the_trail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = tmp_path / "demo"
    printed = io.StringIO()
    # Wide enough that no cell is cut, so message ids print whole.
    ok = asyncio.run(run_demo(workdir=workdir, console=Console(file=printed, width=220)))
    output = printed.getvalue()
    assert ok, output

    rows = summary_rows(output)
    assert len(rows) == 12, output
    assert all(verdict == "accepted" for _, _, verdict, *_ in rows), output
    sent = {(message_type, direction) for message_type, direction, *_ in rows}
    assert sent == {
        (message_type, f"{country} → {'RU' if country == 'TJ' else 'TJ'}")
        for country, routes in ROUTES.items()
        for message_type, _, _ in routes
    }
    assert "TJ-CONSULATE-MOSCOW received 2 alert(s)" in output

    # The CLI would point logging at the stream CliRunner lends it; keep this process's logging as is.
    monkeypatch.setattr("broker.cli.common.configure_logging", lambda *_, **__: None)
    runner = CliRunner()
    for _, direction, _, _, _, message_id in rows:
        country = direction[:2]
        config = workdir / country.lower() / "gateway.toml"
        with capture_logs():
            result = runner.invoke(app, ["status", message_id, "--country", country, "--config", str(config)])
        assert result.exit_code == 0, result.output
        assert "receipted" in result.output, result.output
