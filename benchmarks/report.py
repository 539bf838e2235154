"""The benchmark's result: the JSON document of issue 7 and the same figures as a table."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

# Every key the JSON must carry (issue 7), in the order the table shows them.
KEYS = (
    "raw_msgs_per_s",
    "faststream_msgs_per_s",
    "pipeline_msgs_per_s",
    "ratio_vs_raw",
    "ratio_vs_faststream",
    "p50_ms",
    "p99_ms",
    "receipt_p99_ms",
    "cpu_s_per_1k",
    "peak_rss_mb",
    "verify_entries_per_s",
    "inclusion_proof_ms_at_1m",
)


@dataclass(frozen=True)
class Target:
    key: str
    bound: float
    holds: Callable[[float, float], bool]
    text: str


def targets(cores: int) -> tuple[Target, ...]:
    return (
        Target("ratio_vs_raw", 0.75, operator.ge, ">= 0.75"),
        Target("ratio_vs_faststream", 1.1, operator.ge, ">= 1.1"),
        Target("p99_ms", 50.0, operator.le, "<= 50 at the offered rate"),
        Target("verify_entries_per_s", 10_000.0 * cores, operator.ge, f">= 10,000 x {cores} cores"),
        Target("inclusion_proof_ms_at_1m", 5.0, operator.le, "<= 5"),
    )


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def ratio(numerator: float, denominator: float | None) -> float | None:
    if denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def print_table(result: dict[str, object], *, cores: int, console: Console | None = None) -> None:
    console = console or Console()
    by_key = {target.key: target for target in targets(cores)}
    table = Table(title="End-to-end benchmark (same broker, same path, shovel hop included)")
    for column in ("metric", "value", "target", "met"):
        table.add_column(column)
    for key in KEYS:
        value = result.get(key)
        target = by_key.get(key)
        if not isinstance(value, int | float):
            table.add_row(key, "n/a", target.text if target else "", "")
            continue
        met = (
            "" if target is None else ("yes" if target.holds(float(value), target.bound) else "[red]no[/red]")
        )
        table.add_row(key, f"{value:,.2f}", target.text if target else "", met)
    console.print(table)
    console.print(_cost_table(result))
    notes = result.get("notes")
    if isinstance(notes, list):
        for note in notes:
            console.print(f"• {note}")


def _cost_table(result: dict[str, object]) -> Table:
    """CPU seconds per 1,000 messages by process, and latency at a load the pipeline sustains."""
    table = Table(title="Where the CPU goes (s per 1,000 messages) and latency at a sustained load")
    for column in ("figure", "value"):
        table.add_column(column)
    for key in (
        "raw_client_cpu_s_per_1k",
        "raw_broker_cpu_s_per_1k",
        "sender_cpu_s_per_1k",
        "receiver_cpu_s_per_1k",
        "pipeline_broker_cpu_s_per_1k",
        "steady_rate_per_s",
        "steady_p50_ms",
        "steady_p99_ms",
        "steady_receipt_p99_ms",
        "raw_steady_p50_ms",
        "raw_steady_p99_ms",
        "sustained_rate_per_s",
        "sustained_p50_ms",
        "sustained_p99_ms",
        "sustained_receipt_p99_ms",
        "floor_ms_per_msg",
        "ours_ms_per_msg",
        "ours_vs_floor",
        "http_submissions_per_s",
        "gateway_send_per_s",
        "http_vs_send_ratio",
    ):
        value = result.get(key)
        table.add_row(key, f"{value:,.2f}" if isinstance(value, int | float) else "n/a")
    return table
