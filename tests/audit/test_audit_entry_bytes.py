"""The hand-written leaf input is byte for byte the RFC 8785 form of the record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

from hypothesis import given
from hypothesis import strategies as st

from broker.audit.entry import EntryDraft, EntryKind, entry_bytes, entry_record, format_time
from broker.core.canonical import canonical_bytes

# Any text a column may hold (no lone surrogates: drafts refuse those), control characters included.
_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
_TIMES = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
) | st.datetimes(timezones=st.just(timezone(timedelta(hours=5))), min_value=datetime(2000, 1, 1))


@given(
    kind=st.sampled_from(EntryKind),
    time=_TIMES,
    message_id=st.none() | st.uuids(),
    message_type=st.none() | _TEXT,
    peer=st.none() | _TEXT,
    envelope=st.binary(max_size=300),
    verdict=st.none() | _TEXT,
    reason=st.none() | _TEXT,
)
def test_entry_bytes_equal_the_canonical_form_of_the_record(
    kind: EntryKind,
    time: datetime,
    message_id: UUID | None,
    message_type: str | None,
    peer: str | None,
    envelope: bytes,
    verdict: str | None,
    reason: str | None,
) -> None:
    draft = EntryDraft(
        kind=kind, time=time, message_id=message_id, message_type=message_type, peer=peer,
        envelope=envelope, verdict=verdict, reason=reason,
    )  # fmt: skip
    assert entry_bytes(draft) == canonical_bytes(entry_record(draft))


@given(st.datetimes(min_value=datetime(1, 1, 1), timezones=st.just(UTC)))
def test_time_has_one_spelling(time: datetime) -> None:
    spelled = format_time(time)
    assert spelled.endswith("Z")
    assert len(spelled) == len("2026-11-22T01:02:03.000004Z") or time.year < 1000
    if time.year >= 1000:
        assert spelled == time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
