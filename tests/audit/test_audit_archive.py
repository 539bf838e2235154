"""Archiving old audit entries to segment files, and compacting the store, on SQLite and PostgreSQL.

Each test archives (and mostly compacts) its own copy of a log of a few hundred entries that two
gateways wrote, then checks that every proof still holds, that what was archived is checked against
the segment, and that a damaged or missing segment, or an edit behind the triggers, is named.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from broker.audit.archive import (
    COMPACTION_MIN_AGE,
    ArchivedRange,
    SegmentInvalid,
    SegmentManifest,
    build_segment,
    check_compaction_age,
    check_segment,
    manifest_name,
    segment_name,
)
from broker.audit.checkpoint import SignedCheckpoint
from broker.audit.entry import EntryKind
from broker.audit.stores.source import SqliteSource
from broker.audit.stores.sqlite import SqliteAuditStore
from broker.core.agreement import Agreement
from broker.core.errors import AuditError, ExchangeError, Reason
from broker.core.trust import TrustStore
from broker.state.keystore import KeyStore
from tests.support.audit_logs import (
    BaseLogs,
    Logs,
    copy_store,
    drop_schemas,
    locators,
    module_logs_fixture,
)
from tests.support.audit_run import WORKER_DOCUMENT, run_exchange

ROUNDS = 25  # about 270 entries in TJ's log, 250 in RU's


long_logs = module_logs_fixture(rounds=ROUNDS, tag="archive")


@pytest.fixture
def logs(long_logs: BaseLogs, tmp_path: Path, dev_pki: KeyStore) -> Iterator[Logs]:
    locator = locators(long_logs.backend, tmp_path, uuid4().hex[:12])
    for country, place in locator.items():
        copy_store(long_logs.backend, long_logs.locator[country], place)
    try:
        yield Logs(
            backend=long_logs.backend, locator=locator, run=long_logs.run, keys_dir=dev_pki.root, tmp=tmp_path
        )
    finally:
        if long_logs.backend == "postgres":
            drop_schemas([place.partition("#")[2] for place in locator.values()])


def _output(result: Any) -> str:
    return " ".join(str(result.output).split())


def _checkpoint_sizes(logs: Logs, country: str = "TJ") -> list[int]:
    rows = logs.sql(country, "SELECT envelope FROM audit_entries WHERE kind = 'checkpoint' ORDER BY idx")
    return sorted({SignedCheckpoint.from_bytes(bytes(raw)).body.tree_size for (raw,) in rows})


def _size(logs: Logs, country: str = "TJ") -> int:
    [(size,)] = logs.sql(country, "SELECT count(*) FROM audit_entries")
    return int(size)


def _checkpoint_near(logs: Logs, fraction: float) -> int:
    """A checkpoint's tree size about `fraction` into the log, so entries remain on both sides of it."""
    target = _size(logs) * fraction
    return min(_checkpoint_sizes(logs), key=lambda size: abs(size - target))


def _emptied(logs: Logs, country: str = "TJ") -> int:
    [(count,)] = logs.sql(country, "SELECT count(*) FROM audit_entries WHERE length(envelope) = 0")
    return int(count)


def _archive(logs: Logs, up_to: int, out: Path, *extra: str, country: str = "TJ") -> Any:
    return logs.audit(
        "archive",
        "--up-to",
        str(up_to),
        "--out",
        str(out),
        *logs.store_args(country),
        "--keys",
        str(logs.keys_dir),
        *extra,
    )


def _compact(logs: Logs, archive: Path, country: str = "TJ") -> Any:
    return logs.audit(
        "compact",
        "--archive",
        str(archive),
        "--min-age-days",
        "0",
        *logs.store_args(country),
        "--keys",
        str(logs.keys_dir),
    )


def _archived_and_compacted(logs: Logs, up_to: int) -> Path:
    out = logs.tmp / "archive"
    result = _archive(logs, up_to, out, "--compact", "--min-age-days", "0")
    assert result.exit_code == 0, result.output
    return out


def _index_of(logs: Logs, kind: EntryKind, message_id: Any, country: str = "TJ") -> int:
    key: Any = message_id if logs.backend == "postgres" else str(message_id)
    [(index,)] = logs.sql(
        country, "SELECT idx FROM audit_entries WHERE kind = ? AND message_id = ?", str(kind), key
    )
    return int(index)


class TestArchiveAndCompact:
    def test_every_proof_and_check_holds_after_compaction(self, logs: Logs) -> None:
        up_to = _checkpoint_near(logs, 0.6)
        old_id, new_id = logs.run.sent_by_ru[0], logs.run.sent_by_ru[-1]
        assert (
            _index_of(logs, EntryKind.RECEIVED, old_id) < up_to <= _index_of(logs, EntryKind.RECEIVED, new_id)
        )
        before = {name: logs.tmp / f"{name}-before.json" for name in ("old", "new")}
        for name, message_id in (("old", old_id), ("new", new_id)):
            proved = logs.audit("prove", str(message_id), "--out", str(before[name]), *logs.store_args("TJ"))
            assert proved.exit_code == 0, proved.output
        replay_before = logs.tmp / "replay-before.jsonl"
        assert logs.audit("replay", "--jsonl", str(replay_before), *logs.store_args("TJ")).exit_code == 0
        size = _size(logs)

        out = _archived_and_compacted(logs, up_to)

        assert sorted(path.name for path in out.iterdir()) == sorted(
            [manifest_name(0, up_to), segment_name(0, up_to)]
        )
        assert _size(logs) == size  # nothing deleted
        assert _emptied(logs) > up_to // 2  # most envelopes below up_to were dropped
        [(kept,)] = logs.sql(
            "TJ", "SELECT count(*) FROM audit_entries WHERE idx >= ? AND length(envelope) = 0", up_to
        )
        [(delivered,)] = logs.sql(
            "TJ", "SELECT count(*) FROM audit_entries WHERE idx >= ? AND kind = 'delivered'", up_to
        )
        assert kept == delivered  # past the archive, only the entries logged without an envelope

        # verify: by leaf hash alone without the archive, and said so; fully with it.
        hash_only = logs.verify("TJ")
        assert hash_only.exit_code == 0, hash_only.output
        assert f"entries [0, {up_to})" in _output(hash_only)
        assert "checked by their stored leaf hashes only" in _output(hash_only)
        full = logs.verify("TJ", "--archive", str(out))
        assert full.exit_code == 0, full.output
        assert f"entries [0, {up_to}): checked against {segment_name(0, up_to)}" in _output(full)
        assert "leaf hashes only" not in _output(full)

        # An archived entry needs the archive to be proven; the proof is the one made before.
        after = logs.tmp / "old-after.json"
        refused = logs.audit("prove", str(old_id), "--out", str(after), *logs.store_args("TJ"))
        assert refused.exit_code == 2
        assert "audit.archive_missing" in _output(refused)
        args = ["prove", str(old_id), "--out", str(after), "--archive", str(out), *logs.store_args("TJ")]
        assert logs.audit(*args).exit_code == 0
        assert after.read_bytes() == before["old"].read_bytes()
        new_after = logs.tmp / "new-after.json"
        assert (
            logs.audit("prove", str(new_id), "--out", str(new_after), *logs.store_args("TJ")).exit_code == 0
        )
        assert new_after.read_bytes() == before["new"].read_bytes()
        for proof in (*before.values(), after, new_after):
            checked = logs.audit("check-proof", str(proof))
            assert checked.exit_code == 0, checked.output

        # Consistency between the first checkpoint and the latest comes from the stored subtrees.
        sizes = _checkpoint_sizes(logs)
        first, latest = logs.tmp / "first.json", logs.tmp / "latest.json"
        store = logs.store_args("TJ")
        assert logs.audit("checkpoint", "--out", str(first), "--size", str(sizes[0]), *store).exit_code == 0
        assert logs.audit("checkpoint", "--out", str(latest), *store).exit_code == 0
        consistent = logs.tmp / "consistency.json"
        result = logs.audit("consistency", str(first), str(latest), "--out", str(consistent), *store)
        assert result.exit_code == 0, result.output
        assert logs.audit("check-proof", str(consistent)).exit_code == 0

        # Replay gives back the original bytes from the archive, and needs it only to reach back there.
        replay_after = logs.tmp / "replay-after.jsonl"
        args = ["replay", "--jsonl", str(replay_after), *store]
        assert "audit.archive_missing" in _output(logs.audit(*args))
        assert logs.audit(*args, "--archive", str(out)).exit_code == 0
        assert replay_after.read_bytes() == replay_before.read_bytes()
        [(time,)] = logs.sql("TJ", "SELECT time FROM audit_entries WHERE idx = ?", up_to)
        since = time.isoformat() if isinstance(time, datetime) else time
        recent = logs.audit(*args, "--since", since)
        assert recent.exit_code == 0, recent.output
        replayed = [json.loads(line)["index"] for line in replay_after.read_text().splitlines()]
        assert replayed
        assert min(replayed) >= up_to

    def test_a_workers_bundle_needs_the_archive_and_then_holds_every_message(self, logs: Logs) -> None:
        out = _archived_and_compacted(logs, _checkpoint_near(logs, 0.5))
        bundle = logs.tmp / "worker.zip"
        args = ["bundle", "--worker", WORKER_DOCUMENT, "--out", str(bundle), *logs.store_args("TJ")]
        refused = logs.audit(*args)
        assert refused.exit_code == 2
        assert "audit.archive_missing" in _output(refused)
        assert not bundle.exists()
        made = logs.audit(*args, "--archive", str(out))
        assert made.exit_code == 0, made.output
        checked = logs.audit("check-bundle", str(bundle))
        assert checked.exit_code == 0, checked.output
        for message_id in logs.run.sent_by_ru:
            assert str(message_id) in checked.output

    def test_reconcile_and_export_read_archived_envelopes_from_the_archive(self, logs: Logs) -> None:
        out = _archived_and_compacted(logs, _checkpoint_near(logs, 0.5))
        refused = logs.audit("reconcile", logs.locator["TJ"], logs.locator["RU"])
        assert refused.exit_code == 2
        assert "audit.archive_missing" in _output(refused)
        clean = logs.audit("reconcile", logs.locator["TJ"], logs.locator["RU"], "--archive-a", str(out))
        assert clean.exit_code == 0, clean.output
        exported = logs.tmp / "export.jsonl"
        args = ["export", "--out", str(exported), "--archive", str(out), *logs.store_args("TJ")]
        assert logs.audit(*args).exit_code == 0
        lines = [json.loads(line) for line in exported.read_text().splitlines()]
        assert len(lines) == _size(logs)
        assert all(line["envelope_b64"] for line in lines if line["kind"] in ("sent", "received"))

    def test_a_second_segment_continues_the_first(self, logs: Logs) -> None:
        sizes = _checkpoint_sizes(logs)
        first, second = sizes[len(sizes) // 3], sizes[2 * len(sizes) // 3]
        out = logs.tmp / "archive"
        assert _archive(logs, first, out).exit_code == 0
        again = _archive(logs, first, out)
        assert again.exit_code == 2
        assert "audit.archive_refused" in _output(again)
        assert _archive(logs, second, out, "--compact", "--min-age-days", "0").exit_code == 0
        assert (out / segment_name(first, second)).is_file()
        result = logs.verify("TJ", "--archive", str(out))
        assert result.exit_code == 0, result.output
        for start, end in ((0, first), (first, second)):
            assert f"entries [{start}, {end}): checked against" in _output(result)
        manifest = SegmentManifest.from_bytes((out / manifest_name(first, second)).read_bytes())
        assert manifest.first_index == first
        assert manifest.checkpoint.body.tree_size == second  # archived up to a checkpoint: its own

    def test_archiving_without_a_checkpoint_covering_the_range_is_refused(self, logs: Logs) -> None:
        out = logs.tmp / "archive"
        latest = _checkpoint_sizes(logs)[-1]
        beyond = latest + 1
        assert beyond <= _size(logs)  # the final checkpoint cannot sign the entry that holds it
        result = _archive(logs, beyond, out)
        assert result.exit_code == 2
        assert "audit.not_covered" in _output(result)
        assert f"the latest signs {latest}" in _output(result)
        assert not out.exists() or not any(out.iterdir())
        too_far = _archive(logs, _size(logs) + 1, out)
        assert too_far.exit_code == 2
        assert "audit.out_of_range" in _output(too_far)
        # Between two checkpoints is fine: the next one anchors it, through a consistency path.
        sizes = _checkpoint_sizes(logs)
        between = next(size - 1 for size in sizes[1:] if size - 1 not in sizes)
        assert _archive(logs, between, out).exit_code == 0
        manifest = SegmentManifest.from_bytes((out / manifest_name(0, between)).read_bytes())
        assert manifest.checkpoint.body.tree_size == between + 1
        assert manifest.consistency


class TestDamage:
    def test_a_changed_byte_in_the_segment_is_named_by_its_index(self, logs: Logs) -> None:
        up_to = _checkpoint_near(logs, 0.5)
        out = _archived_and_compacted(logs, up_to)
        segment = out / segment_name(0, up_to)
        data = bytearray(segment.read_bytes())
        line = up_to // 2
        start = sum(len(text) + 1 for text in bytes(data).split(b"\n")[:line])
        data[start + 40] ^= 0x01
        segment.write_bytes(bytes(data))
        result = logs.verify("TJ", "--archive", str(out))
        assert result.exit_code == 1
        assert f"entry {line}:" in _output(result)
        assert "audit.archive_invalid" in _output(result)
        assert segment_name(0, up_to) in _output(result)

    def test_a_changed_manifest_is_named(self, logs: Logs) -> None:
        up_to = _checkpoint_near(logs, 0.5)
        out = _archived_and_compacted(logs, up_to)
        manifest = out / manifest_name(0, up_to)
        data = bytearray(manifest.read_bytes())
        data[len(data) // 2] ^= 0x01
        manifest.write_bytes(bytes(data))
        result = logs.verify("TJ", "--archive", str(out))
        assert result.exit_code == 1
        assert "audit.archive_invalid" in _output(result)
        assert "the manifest file is not the one the store recorded" in _output(result)

    def test_a_deleted_segment_file_is_reported(self, logs: Logs) -> None:
        up_to = _checkpoint_near(logs, 0.5)
        out = _archived_and_compacted(logs, up_to)
        (out / segment_name(0, up_to)).unlink()
        result = logs.verify("TJ", "--archive", str(out))
        assert result.exit_code == 1
        assert "entry 0:" in _output(result)
        assert "audit.archive_missing" in _output(result)
        assert segment_name(0, up_to) in _output(result)
        proof = logs.tmp / "proof.json"
        args = ["prove", str(logs.run.sent_by_ru[0]), "--out", str(proof), "--archive", str(out)]
        refused = logs.audit(*args, *logs.store_args("TJ"))
        assert refused.exit_code == 2
        assert "audit.archive_missing" in _output(refused)

    def test_an_edited_row_of_a_compacted_range_is_named(self, logs: Logs) -> None:
        up_to = _checkpoint_near(logs, 0.5)
        out = _archived_and_compacted(logs, up_to)
        index = _index_of(logs, EntryKind.RECEIVED, logs.run.sent_by_ru[1])
        assert index < up_to
        logs.unguard("TJ")
        logs.sql("TJ", "UPDATE audit_entries SET peer = ? WHERE idx = ?", "XX-GW", index)
        result = logs.verify("TJ", "--archive", str(out))
        assert result.exit_code == 1
        assert f"entry {index}:" in _output(result)
        assert "audit.tampered" in _output(result)


class TestCompactionRefused:
    def test_compacting_against_a_changed_or_missing_segment_is_refused(self, logs: Logs) -> None:
        up_to = _checkpoint_near(logs, 0.5)
        out = logs.tmp / "archive"
        assert _archive(logs, up_to, out).exit_code == 0
        assert _emptied(logs) == _emptied_before(logs)
        segment = out / segment_name(0, up_to)
        original = segment.read_bytes()
        segment.write_bytes(original.replace(b'"kind":"received"', b'"kind":"rejected"', 1))
        changed = _compact(logs, out)
        assert changed.exit_code == 1
        assert "audit.archive_invalid" in _output(changed)
        segment.unlink()
        missing = _compact(logs, out)
        assert missing.exit_code == 2
        assert "audit.archive_missing" in _output(missing)
        assert _emptied(logs) == _emptied_before(logs)  # nothing was dropped
        segment.write_bytes(original)
        compacted = _compact(logs, out)
        assert compacted.exit_code == 0, compacted.output
        assert _emptied(logs) > _emptied_before(logs)
        assert "compacted already" in _output(_compact(logs, out))

    def test_compacting_with_nothing_archived_is_refused(self, logs: Logs) -> None:
        result = _compact(logs, logs.tmp / "archive")
        assert result.exit_code == 2
        assert "audit.archive_refused" in _output(result)

    def test_the_triggers_refuse_every_other_change_after_archiving(self, logs: Logs) -> None:
        up_to = _checkpoint_near(logs, 0.5)
        _archived_and_compacted(logs, up_to)
        inside = _index_of(logs, EntryKind.RECEIVED, logs.run.sent_by_ru[1])
        outside = _index_of(logs, EntryKind.RECEIVED, logs.run.sent_by_ru[-1])
        [(checkpoint,)] = logs.sql(
            "TJ", "SELECT min(idx) FROM audit_entries WHERE kind = 'checkpoint' AND idx < ?", up_to
        )
        statements: list[tuple[str, tuple[Any, ...]]] = [
            ("UPDATE audit_entries SET envelope = ? WHERE idx = ?", (b"", outside)),
            ("UPDATE audit_entries SET envelope = ? WHERE idx = ?", (b"", checkpoint)),
            ("UPDATE audit_entries SET envelope = ? WHERE idx = ?", (b"{}", inside)),
            ("UPDATE audit_entries SET peer = ? WHERE idx = ?", ("XX-GW", inside)),
            ("UPDATE audit_entries SET leaf_hash = ? WHERE idx = ?", (bytes(32), inside)),
            ("DELETE FROM audit_entries WHERE idx = ?", (inside,)),
            ("UPDATE audit_archives SET end_index = end_index + 10", ()),
            ("DELETE FROM audit_archives", ()),
        ]
        for statement, params in statements:
            with pytest.raises(Exception, match="append-only"):
                logs.sql("TJ", statement, *params)
        assert logs.verify("TJ").exit_code == 0


def _emptied_before(logs: Logs) -> int:
    """Entries logged with no envelope at all (deliveries): what an uncompacted log holds empty."""
    [(count,)] = logs.sql("TJ", "SELECT count(*) FROM audit_entries WHERE kind = 'delivered'")
    return int(count)


# -- the segment format itself, without a store ------------------------------------------------------


async def test_a_segment_checks_offline_and_any_changed_byte_fails(
    tmp_path: Path, dev_pki: KeyStore, agreement: Agreement, trust: TrustStore, pki_now: datetime
) -> None:
    stores = [
        await SqliteAuditStore.open(tmp_path / "tj.sqlite"),
        await SqliteAuditStore.open(tmp_path / "ru.sqlite"),
    ]
    try:
        await run_exchange(
            tj_store=stores[0], ru_store=stores[1], state_dir=tmp_path, keys=dev_pki,
            agreement=agreement, trust=trust, start=pki_now + timedelta(days=30), rounds=1,
        )  # fmt: skip
        tj = stores[0]
        checkpoints = [
            SignedCheckpoint.from_bytes(entry.envelope)
            async for entry in tj.entries()
            if entry.kind is EntryKind.CHECKPOINT
        ]
        first = 3
        # Where the gateways' checkpoints fall depends on timing: take a middle one that leaves the
        # segment at least one entry.
        usable = [c for c in checkpoints if c.body.tree_size - 1 > first]
        anchor = usable[len(usable) // 2]
        end = anchor.body.tree_size - 1
        entries = [entry async for entry in tj.entries(first, end)]
        prefix = (await tj.root(2), (await tj.entry(2)).leaf_hash)  # perfect_cover(0, 3)
        data = build_segment(entries)
        manifest = SegmentManifest(
            first_index=first,
            end_index=end,
            segment=segment_name(first, end),
            segment_sha256=hashlib.sha256(data).digest(),
            prefix=prefix,
            root=await tj.root(end),
            checkpoint=anchor,
            consistency=tuple(await tj.consistency_proof(end, anchor.body.tree_size)),
        )
    finally:
        for store in stores:
            await store.close()
    records = check_segment(SegmentManifest.from_bytes(manifest.to_bytes()), data, trust=trust)
    assert [record.entry() for record in records] == entries
    for position in range(0, len(data), 53):
        altered = bytearray(data)
        altered[position] ^= 0x01
        with pytest.raises(SegmentInvalid):
            check_segment(manifest, bytes(altered), trust=trust)
    raw = manifest.to_bytes()
    signed_start = raw.index(anchor.compact().encode())
    signed = range(signed_start, signed_start + len(anchor.compact()))
    for position in range(0, len(raw), 7):
        altered = bytearray(raw)
        altered[position] ^= 0x01
        with pytest.raises(ExchangeError) as caught:
            check_segment(SegmentManifest.from_bytes(bytes(altered)), data, trust=trust)
        if position not in signed:  # inside the checkpoint, its own checks speak (signature, cert...)
            assert caught.value.reason == Reason.AUDIT_ARCHIVE_INVALID, (position, caught.value)


def test_compaction_waits_until_entries_leave_the_replay_window(pki_now: datetime) -> None:
    archived = ArchivedRange(
        first_index=0, end_index=10, segment=segment_name(0, 10), segment_sha256=b"", manifest=b""
    )
    newest = pki_now
    check_compaction_age(
        newest, now=newest + COMPACTION_MIN_AGE, min_age=COMPACTION_MIN_AGE, archived=archived
    )
    with pytest.raises(AuditError) as caught:
        check_compaction_age(
            newest,
            now=newest + COMPACTION_MIN_AGE - timedelta(seconds=1),
            min_age=COMPACTION_MIN_AGE,
            archived=archived,
        )
    assert caught.value.reason == Reason.AUDIT_ARCHIVE_REFUSED


async def test_a_schema_1_sqlite_store_gets_the_compaction_trigger_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    await (await SqliteAuditStore.open(path)).close()
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        # What a store written before archiving holds: an update trigger refusing everything.
        connection.executescript(
            "DROP TRIGGER audit_entries_no_update; DROP TABLE audit_archives;"
            "CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries "
            "BEGIN SELECT RAISE(ABORT, 'audit log is append-only: update on audit_entries refused'); END;"
            "PRAGMA user_version=1;"
        )
    finally:
        connection.close()
    old_store = SqliteSource(path=path)
    try:
        assert await old_store.segments() == []  # an auditor's copy of an old store reads as never archived
    finally:
        await old_store.close()
    await (await SqliteAuditStore.open(path)).close()
    connection = sqlite3.connect(path)
    try:
        [(version,)] = connection.execute("PRAGMA user_version")
        [(trigger,)] = connection.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'audit_entries_no_update'"
        )
    finally:
        connection.close()
    assert version == 2
    assert "audit_archives" in trigger
