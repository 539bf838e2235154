"""The console benchmark runs end to end on a small store and reports every page.

No timing is asserted (figures depend on the machine); what must hold is that every page answered
200 with the store built (the benchmark raises otherwise) and that the JSON names every page.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGES = {
    "operator_overview",
    "operator_messages",
    "operator_messages_filtered",
    "operator_message",
    "operator_keys",
    "auditor_checkpoints",
    "consulate_alerts",
}


def test_a_small_console_benchmark_reports_every_page(tmp_path: Path) -> None:
    out = tmp_path / "console.json"
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.console", "--messages", "2000", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    figures = json.loads(out.read_text(encoding="utf-8"))
    assert figures["messages"] == 2000
    assert set(figures["pages"]) == PAGES
    for page in figures["pages"].values():
        assert 0 < page["p50_ms"] <= page["max_ms"]
    assert figures["consulate_first_visit_ms"] > 0
