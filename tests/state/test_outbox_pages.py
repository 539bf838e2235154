"""The outbox as the console reads it: filtered pages newest first, keyset paging that neither skips
nor repeats a row, counts by the hour, and the oldest message still waiting for its receipt."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

from broker.core.ids import uuid7
from broker.state.outbox import Outbox, OutboxFilter, OutboxReader, SendState

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
TYPES = ("employer.permit", "legislation.change", "worker.death")
STATES = (SendState.RECEIPTED, SendState.REJECTED, SendState.SENT, SendState.CONFIRMED)


def _outbox(path: Path, count: int) -> list[tuple[UUID, str, str, SendState, datetime]]:
    """`count` rows, one a minute back from NOW, types and states and peers in turn."""
    Outbox.open(path).close()
    rows = []
    for i in range(count):
        rows.append(
            (
                uuid7(),
                TYPES[i % 3],
                "RU-MINTRUD" if i % 2 else "RU-MVD",
                STATES[i % 4],
                NOW - timedelta(minutes=i),
            )
        )
    db = sqlite3.connect(path)
    db.executemany(
        "INSERT INTO outbox VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                str(m),
                t,
                p,
                b"{}",
                "0" * 64,
                str(s),
                at.isoformat(),
                (at + timedelta(hours=1)).isoformat(),
                1,
                None,
                None,
            )
            for m, t, p, s, at in rows
        ],
    )
    db.commit()
    db.close()
    return rows


async def _all_pages(reader: OutboxReader, where: OutboxFilter, size: int) -> list[list[UUID]]:
    pages: list[list[UUID]] = []
    while True:
        page = await reader.page(where, limit=size)
        if not page:
            return pages
        pages.append([r.message_id for r in page])
        last = page[-1]
        where = OutboxFilter(**{**where.__dict__, "before": (last.sent_at.isoformat(), str(last.message_id))})


async def test_filtered_pages_are_newest_first_and_keyset_paging_neither_skips_nor_repeats(
    tmp_path: Path,
) -> None:
    rows = _outbox(tmp_path / "outbox.sqlite", 200)
    reader = OutboxReader(tmp_path / "outbox.sqlite")

    every = [m for page in await _all_pages(reader, OutboxFilter(), 30) for m in page]
    assert every == [m for m, *_ in rows]  # already newest first

    where = OutboxFilter(
        message_type="worker.death",
        recipient="RU-MVD",
        state=SendState.RECEIPTED,
        since=NOW - timedelta(minutes=150),
        until=NOW - timedelta(minutes=10),
    )
    expected = [
        m for m, t, p, s, at in rows
        if t == "worker.death" and p == "RU-MVD" and s is SendState.RECEIPTED
        and NOW - timedelta(minutes=150) <= at < NOW - timedelta(minutes=10)
    ]  # fmt: skip
    assert expected, "the filter selects something"
    pages = await _all_pages(reader, where, 3)
    assert [m for page in pages for m in page] == expected
    assert all(len(page) <= 3 for page in pages)


async def test_hourly_counts_and_the_oldest_waiting_message(tmp_path: Path) -> None:
    rows = _outbox(tmp_path / "outbox.sqlite", 240)  # four hours, one a minute
    reader = OutboxReader(tmp_path / "outbox.sqlite")

    counts = await reader.hourly(NOW - timedelta(hours=2))
    assert sum(n for *_, n in counts) == 121  # 12:00 back to 10:00 inclusive
    assert ("2026-11-30T11", "worker.death", "rejected", 5) in counts

    waiting = [(at, m) for m, _, _, s, at in rows if s in (SendState.SENT, SendState.CONFIRMED)]
    oldest = await reader.oldest_waiting()
    assert oldest is not None
    assert oldest.message_id == min(waiting)[1]
