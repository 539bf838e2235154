"""Messages per hour by type and outcome, drawn on the server as an SVG bar chart (no script)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from markupsafe import Markup, escape

WIDTH, HEIGHT, LEFT, BOTTOM = 760, 220, 40, 40
# One colour per outcome; a type is told apart by the legend rows, stacked in a fixed order.
COLOURS = {"receipted": "#2e7d32", "rejected": "#c62828", "confirmed": "#1565c0", "sent": "#9e9e9e"}


@dataclass(frozen=True)
class Series:
    hours: list[str]  # `YYYY-MM-DDTHH`, oldest first
    counts: dict[tuple[str, str], list[int]]  # (type, outcome) -> count per hour


def series(rows: list[tuple[str, str, str, int]], *, now: datetime, hours: int = 24) -> Series:
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    labels = [(start + timedelta(hours=h)).strftime("%Y-%m-%dT%H") for h in range(hours)]
    position = {label: i for i, label in enumerate(labels)}
    counts: dict[tuple[str, str], list[int]] = {}
    for hour, message_type, state, count in rows:
        if hour in position:
            counts.setdefault((message_type, state), [0] * hours)[position[hour]] += count
    return Series(hours=labels, counts=dict(sorted(counts.items())))


def svg(data: Series, *, title: str) -> Markup:
    """Stacked bars, one per hour; each (type, outcome) a segment with a tooltip of its count."""
    slots = len(data.hours)
    totals = [sum(values[i] for values in data.counts.values()) for i in range(slots)]
    top = max([1, *totals])
    bar = (WIDTH - LEFT) / slots
    plot = HEIGHT - BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" class="chart"><title>{escape(title)}</title>',
        f'<text x="0" y="12" font-size="11">{top}</text><text x="0" y="{plot}" font-size="11">0</text>',
        f'<line x1="{LEFT}" y1="{plot}" x2="{WIDTH}" y2="{plot}" stroke="#555"/>',
    ]
    for i in range(slots):
        y: float = plot
        for (message_type, outcome), values in data.counts.items():
            if not values[i]:
                continue
            height = plot * values[i] / top
            y -= height
            colour = COLOURS.get(outcome, "#6a1b9a")
            parts.append(
                f'<rect x="{LEFT + i * bar + 1:.1f}" y="{y:.1f}" width="{bar - 2:.1f}" height="{height:.1f}" '
                f'fill="{colour}"><title>{escape(data.hours[i])}:00 {escape(message_type)} '
                f"{escape(outcome)}: {values[i]}</title></rect>"
            )
        if i % 4 == 0:
            parts.append(
                f'<text x="{LEFT + i * bar:.1f}" y="{HEIGHT - 22}" font-size="10">{escape(data.hours[i][11:])}:00</text>'
            )
    legend_x = LEFT
    for outcome, colour in COLOURS.items():
        parts.append(f'<rect x="{legend_x}" y="{HEIGHT - 12}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{legend_x + 14}" y="{HEIGHT - 3}" font-size="11">{outcome}</text>')
        legend_x += 90
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every value inside is escaped or a number
