"""`broker audit ...` on real logs, stored in SQLite and in PostgreSQL, tampered the way an operator could.

Each test runs a small exchange between the two gateways (tests/support/audit_run.py) into a fresh pair
of stores, tampers with one of them behind the store's back (dropping the append-only triggers
first, as someone with database access would), and runs the auditor's commands on it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import aio_pika
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.audit.checkpoint import CheckpointBody, SignedCheckpoint, sign_checkpoint
from broker.audit.entry import EntryDraft, EntryKind, entry_leaf_hash, format_time
from broker.audit.stores.sqlite import SqliteAuditStore
from broker.audit.witnessing import WITNESS_TYPE
from broker.cli.audit import audit_app
from broker.core.agreement import Agreement
from broker.core.pki import Signer, create_ca, issue_authority_certificate
from broker.core.trust import TrustStore
from broker.state.keystore import KeyStore
from tests.cli.test_error_path import BROKER
from tests.support.audit_logs import (
    RABBIT_URL,
    BaseLogs,
    Logs,
    copy_store,
    drop_schemas,
    locators,
    module_logs_fixture,
    open_store,
    runner,
)
from tests.support.audit_run import WORKER_DOCUMENT, run_exchange

# One exchange per backend; each test tampers with its own copy.
base_logs = module_logs_fixture(rounds=2, tag="exchange")


@pytest.fixture
def logs(base_logs: BaseLogs, tmp_path: Path, dev_pki: KeyStore) -> Iterator[Logs]:
    locator = locators(base_logs.backend, tmp_path, uuid4().hex[:12])
    for country, place in locator.items():
        copy_store(base_logs.backend, base_logs.locator[country], place)
    copy = Logs(
        backend=base_logs.backend,
        locator=dict(locator),
        run=base_logs.run,
        keys_dir=dev_pki.root,
        tmp=tmp_path,
    )
    try:
        yield copy
    finally:
        if base_logs.backend == "postgres":
            places = {*locator.values(), *copy.locator.values()}
            drop_schemas([place.partition("#")[2] for place in places])


def _first(logs: Logs, country: str, kind: EntryKind) -> int:
    return logs.kinds(country).index(str(kind))


def _failed_at(result: Any, index: int) -> str:
    assert result.exit_code == 1, result.output
    assert f"entry {index}:" in result.output, result.output
    return str(result.output)


def _failed_in_range(result: Any, tampered: int) -> str:
    """A failure naming a range [start, end) of entries that contains the tampered index."""
    assert result.exit_code == 1, result.output
    text = " ".join(str(result.output).split())
    named = int(text.split("entry ", 1)[1].split(":", 1)[0])
    assert named <= tampered, text
    return text


class TestVerify:
    def test_untouched_logs_verify_and_cross_check_their_witnesses(self, logs: Logs) -> None:
        for country, peer in (("TJ", "RU"), ("RU", "TJ")):
            result = logs.verify(country, "--witness-store", logs.locator[peer])
            assert result.exit_code == 0, result.output
            assert "OK" in result.output
            assert "0 of 0 external" not in result.output  # the peer did witness our checkpoints
            assert " 0 of our checkpoints countersigned" not in result.output  # and handed those back

    def test_verify_with_its_progress_bar_runs_in_a_pipe(self, logs: Logs) -> None:
        """The progress bar is on by default; in a pipe it crashed (`_CurrentStream` is no console)."""
        result = subprocess.run(
            [str(BROKER), "audit", "verify", *logs.store_args("TJ"), "--keys", str(logs.keys_dir)],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert "OK" in result.stdout
        assert "Traceback" not in result.stderr

    @pytest.mark.parametrize("column", ["envelope", "kind", "time", "peer", "leaf_hash"])
    def test_one_changed_byte_in_any_column_is_named(self, logs: Logs, column: str) -> None:
        index = _first(logs, "TJ", EntryKind.RECEIVED)
        [(value,)] = logs.sql("TJ", f"SELECT {column} FROM audit_entries WHERE idx = ?", index)
        logs.unguard("TJ")
        changed: Any
        if isinstance(value, bytes):
            changed = value[:10] + bytes([value[10] ^ 1]) + value[11:]
        elif isinstance(value, datetime):
            changed = value + timedelta(microseconds=1)
        else:
            changed = value[:-1] + chr(ord(value[-1]) ^ 1)
        logs.sql("TJ", f"UPDATE audit_entries SET {column} = ? WHERE idx = ?", changed, index)
        _failed_at(logs.verify("TJ"), index)

    def test_a_deleted_entry_is_named(self, logs: Logs) -> None:
        index = _first(logs, "RU", EntryKind.RECEIPT_SENT)
        logs.unguard("RU")
        logs.sql("RU", "DELETE FROM audit_entries WHERE idx = ?", index)
        assert "missing" in _failed_at(logs.verify("RU"), index)

    def test_reordered_entries_break_the_next_checkpoint(self, logs: Logs) -> None:
        first = _first(logs, "TJ", EntryKind.RECEIVED)
        second = first + 1 if logs.kinds("TJ")[first + 1] != "checkpoint" else first - 1
        logs.unguard("TJ")
        parked = 10**9
        logs.sql("TJ", "UPDATE audit_entries SET idx = ? WHERE idx = ?", parked, first)
        logs.sql("TJ", "UPDATE audit_entries SET idx = ? WHERE idx = ?", first, second)
        logs.sql("TJ", "UPDATE audit_entries SET idx = ? WHERE idx = ?", second, parked)
        text = _failed_in_range(logs.verify("TJ"), min(first, second))
        assert "audit.tampered" in text

    def test_an_inserted_entry_breaks_the_next_checkpoint(self, logs: Logs) -> None:
        index = _first(logs, "RU", EntryKind.RECEIVED)
        [(time,)] = logs.sql("RU", "SELECT time FROM audit_entries WHERE idx = ?", index)
        moment = time if isinstance(time, datetime) else datetime.fromisoformat(time)
        forged = EntryDraft(
            kind=EntryKind.DELIVERED,
            time=moment,
            message_id=logs.run.sent_by_tj[0],
            message_type="legislation.change",
            peer="TJ-MOL",
            envelope=b"",
            verdict="accepted",
        )
        logs.unguard("RU")
        shift = 10**9
        logs.sql("RU", "UPDATE audit_entries SET idx = idx + ? WHERE idx >= ?", shift, index)
        logs.sql("RU", "UPDATE audit_entries SET idx = idx - ? + 1 WHERE idx >= ?", shift, shift)
        time_value: Any = moment if logs.backend == "postgres" else format_time(moment)
        message_id: Any = forged.message_id if logs.backend == "postgres" else str(forged.message_id)
        logs.sql(
            "RU",
            "INSERT INTO audit_entries (idx, kind, time, message_id, message_type, peer, envelope, verdict, "
            "reason, leaf_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
            index,
            "delivered",
            time_value,
            message_id,
            forged.message_type,
            forged.peer,
            b"",
            "accepted",
            entry_leaf_hash(forged),
        )
        _failed_in_range(logs.verify("RU"), index)

    def test_a_truncated_log_is_caught_by_the_peers_witness(self, logs: Logs) -> None:
        witnessed = _witnessed_sizes(logs, witness="TJ", origin="RU-GW")
        cut = max(witnessed) - 2
        logs.unguard("RU")
        logs.sql("RU", "DELETE FROM audit_entries WHERE idx >= ?", cut)
        result = logs.verify("RU", "--witness-store", logs.locator["TJ"])
        assert "truncated" in _failed_at(result, cut)
        assert "audit.witness_mismatch" in result.output

    def test_a_rewritten_tree_signed_by_an_untrusted_key_is_refused(
        self, logs: Logs, pki_now: datetime
    ) -> None:
        rogue = _rogue_gateway_signer("RU-GW", at=pki_now)
        _rewrite(logs, "RU", signer=rogue)
        result = logs.verify("RU")
        assert "cert.untrusted" in _failed_at(result, _first(logs, "RU", EntryKind.CHECKPOINT))

    def test_a_rewritten_tree_resigned_with_the_real_key_is_caught_by_the_countersignatures_it_holds(
        self, logs: Logs, dev_pki: KeyStore, pki_now: datetime
    ) -> None:
        changed = _rewrite(logs, "RU", signer=dev_pki.signer("RU-GW", at=pki_now))
        # TJ handed its countersignatures back: RU's own log holds signatures its operator cannot forge.
        text = _failed_in_range(logs.verify("RU"), changed)
        assert "audit.witness_mismatch" in text
        assert "TJ-GW countersigned" in text

    def test_a_rewritten_tree_without_the_countersignatures_is_caught_by_the_peers_witness(
        self, logs: Logs, dev_pki: KeyStore, pki_now: datetime
    ) -> None:
        changed = _rewrite(
            logs, "RU", signer=dev_pki.signer("RU-GW", at=pki_now), drop_countersignatures=True
        )
        assert logs.verify("RU").exit_code == 0  # consistent in itself: only the peer can tell
        result = logs.verify("RU", "--witness-store", logs.locator["TJ"])
        text = _failed_in_range(result, changed)
        assert "audit.witness_mismatch" in text
        assert "TJ-GW" in text


def _witnessed_sizes(logs: Logs, *, witness: str, origin: str) -> list[int]:
    from broker.audit.checkpoint import WitnessRecord  # noqa: PLC0415

    sizes = []
    for (envelope,) in logs.sql(witness, "SELECT envelope FROM audit_entries WHERE kind = 'witness'"):
        record = WitnessRecord.from_bytes(bytes(envelope))
        if record.checkpoint.body.origin == origin:
            sizes.append(record.checkpoint.body.tree_size)
    assert sizes, "the peer witnessed nothing"
    return sizes


def _rogue_gateway_signer(authority_id: str, *, at: datetime) -> Signer:
    """The same gateway name under a CA the auditor does not trust (an operator's home-made CA)."""
    ca_key, ca_cert = create_ca(country="RU", not_before=at, not_after=at + timedelta(days=3650))
    key = Ed25519PrivateKey.generate()
    cert = issue_authority_certificate(
        ca_key=ca_key,
        ca_cert=ca_cert,
        authority_id=authority_id,
        country="RU",
        public_key=key.public_key(),
        not_before=at,
        not_after=at + timedelta(days=365),
    )
    return Signer(authority_id=authority_id, private_key=key, chain=(cert, ca_cert))


def _rewrite(logs: Logs, country: str, *, signer: Signer, drop_countersignatures: bool = False) -> int:
    """Change the time of the first RECEIVED entry (the one the first receipt's checkpoint covers,
    so the peer countersigned a root including it) and rebuild the whole log around it, re-signing
    every checkpoint, as an operator holding `signer` would; with `drop_countersignatures`, also
    leave out the peer's countersignatures received (they would give the rewrite away). Returns
    the changed index."""
    original = logs.locator[country]
    rebuilt = str(logs.tmp / f"rewritten-{country}.sqlite") if logs.backend == "sqlite" else f"{original}_rw"
    changed = _first(logs, country, EntryKind.RECEIVED)

    async def rebuild() -> None:
        source, target = await open_store(logs.backend, original), await open_store(logs.backend, rebuilt)
        dropped: list[int] = []
        try:
            async for entry in source.entries():
                if drop_countersignatures and entry.message_type == WITNESS_TYPE:
                    assert entry.index > changed  # so the changed index stays where it was
                    if entry.kind is EntryKind.RECEIVED:
                        dropped.append(entry.index)
                        continue
                draft = entry.draft()
                if entry.index == changed:
                    draft = EntryDraft(**{**vars(draft), "time": draft.time + timedelta(seconds=1)})
                if entry.kind is EntryKind.CHECKPOINT:
                    old = SignedCheckpoint.from_bytes(entry.envelope).body
                    size = old.tree_size - sum(1 for index in dropped if index < old.tree_size)
                    body = CheckpointBody(
                        origin=old.origin,
                        tree_size=size,
                        root_hash=await target.root(size),
                        time=old.time,
                    )
                    draft = EntryDraft(
                        **{**vars(draft), "envelope": sign_checkpoint(body, signer=signer).to_bytes()}
                    )
                await target.append([draft])
        finally:
            await source.close()
            await target.close()

    asyncio.run(rebuild())
    logs.locator[country] = rebuilt
    return changed


class TestProofs:
    def test_prove_and_check_an_entry_then_a_changed_byte_fails(self, logs: Logs) -> None:
        message_id = logs.run.sent_by_ru[0]
        proof = logs.tmp / "proof.json"
        result = logs.audit(
            "prove", str(message_id), "--kind", "received", "--out", str(proof), *logs.store_args("TJ")
        )
        assert result.exit_code == 0, result.output
        checked = logs.audit("check-proof", str(proof))
        assert checked.exit_code == 0, checked.output
        assert str(message_id) in checked.output
        assert "received" in checked.output
        data = bytearray(proof.read_bytes())
        data[len(data) // 3] ^= 0x01
        proof.write_bytes(bytes(data))
        assert logs.audit("check-proof", str(proof)).exit_code == 1

    def test_trust_bundle_files_serve_instead_of_a_keys_directory(
        self, logs: Logs, dev_pki: KeyStore
    ) -> None:
        proof = logs.tmp / "proof.json"
        args = ["prove", str(logs.run.sent_by_tj[0]), "--kind", "sent", "--out", str(proof)]
        assert logs.audit(*args, *logs.store_args("TJ")).exit_code == 0
        bundles = []
        for country in ("TJ", "RU"):
            bundles += ["--trust-bundle", str(logs.tmp / f"{country}.bundle.pem")]
            (logs.tmp / f"{country}.bundle.pem").write_bytes(dev_pki.export_bundle(country))
        checked = runner.invoke(audit_app, ["check-proof", str(proof), *bundles])
        assert checked.exit_code == 0, checked.output
        only_ru = runner.invoke(audit_app, ["check-proof", str(proof), *bundles[2:]])
        assert only_ru.exit_code == 1  # TJ's checkpoint and envelope, and no TJ anchor
        assert "cert.untrusted" in only_ru.output

    def test_consistency_between_two_checkpoints(self, logs: Logs) -> None:
        first = logs.tmp / "old.json"
        latest = logs.tmp / "new.json"
        sizes = sorted(
            SignedCheckpoint.from_bytes(bytes(raw)).body.tree_size
            for (raw,) in logs.sql("TJ", "SELECT envelope FROM audit_entries WHERE kind = 'checkpoint'")
        )
        store = logs.store_args("TJ")
        assert logs.audit("checkpoint", "--out", str(first), "--size", str(sizes[0]), *store).exit_code == 0
        assert logs.audit("checkpoint", "--out", str(latest), *store).exit_code == 0
        saved = logs.tmp / "consistency.json"
        result = logs.audit("consistency", str(first), str(latest), "--out", str(saved), *store)
        assert result.exit_code == 0, result.output
        assert f"{sizes[-1]} entries extend {sizes[0]}" in " ".join(result.output.split())
        assert logs.audit("check-proof", str(saved)).exit_code == 0


class TestReconcileReplayExport:
    def test_reconcile_is_clean_then_reports_a_message_deleted_from_the_receiver(self, logs: Logs) -> None:
        clean = logs.audit("reconcile", logs.locator["TJ"], logs.locator["RU"])
        assert clean.exit_code == 0, clean.output
        victim = logs.run.sent_by_ru[1]
        logs.unguard("TJ")
        key: Any = victim if logs.backend == "postgres" else str(victim)
        logs.sql("TJ", "DELETE FROM audit_entries WHERE message_id = ? AND kind = 'received'", key)
        result = logs.audit("reconcile", logs.locator["TJ"], logs.locator["RU"])
        assert result.exit_code == 1
        text = " ".join(result.output.split())
        assert f"{victim}" in text
        assert "no received or rejected entry" in text
        assert "audit.reconcile_gap" in text

    def test_replay_writes_original_bytes_in_order_marked_as_replays(self, logs: Logs) -> None:
        out = logs.tmp / "replay.jsonl"
        result = logs.audit("replay", "--kind", "received", "--jsonl", str(out), *logs.store_args("TJ"))
        assert result.exit_code == 0, result.output
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        stored = logs.sql(
            "TJ", "SELECT idx, envelope FROM audit_entries WHERE kind = 'received' ORDER BY idx"
        )
        assert [(line["index"], base64.b64decode(line["envelope_b64"])) for line in lines] == [
            (idx, bytes(envelope)) for idx, envelope in stored
        ]
        assert all(line["x-replay"] is True for line in lines)

    def test_replay_refuses_a_subscriber_queue_unless_named_explicitly(self, logs: Logs) -> None:
        args = ["replay", "--to-queue", "sub.TJ-MOL", "--amqp-url", RABBIT_URL, *logs.store_args("TJ")]
        result = logs.audit(*args)
        assert result.exit_code == 2
        assert "audit.replay_refused" in result.output

    def test_replay_refuses_plaintext_to_another_host(self, logs: Logs) -> None:
        url = "amqp://sandbox:S3cretPw9@sandbox.example:5672/replay"
        result = logs.audit("replay", "--to-queue", "sandbox", "--amqp-url", url, *logs.store_args("TJ"))
        assert result.exit_code != 0
        assert "config.insecure_tls" in result.output
        assert "S3cretPw9" not in result.output

    def test_export_jsonl_and_csv_hold_every_entry(self, logs: Logs) -> None:
        size = len(logs.kinds("RU"))
        for export_format, header in (("jsonl", 0), ("csv", 1)):
            out = logs.tmp / f"export.{export_format}"
            result = logs.audit(
                "export", "--format", export_format, "--out", str(out), *logs.store_args("RU")
            )
            assert result.exit_code == 0, result.output
            assert len(out.read_text().splitlines()) == size + header


class TestBundle:
    def test_a_workers_bundle_checks_offline_and_a_changed_byte_fails(self, logs: Logs) -> None:
        out = logs.tmp / "worker.zip"
        result = logs.audit("bundle", "--worker", WORKER_DOCUMENT, "--out", str(out), *logs.store_args("TJ"))
        assert result.exit_code == 0, result.output
        checked = logs.audit("check-bundle", str(out))
        assert checked.exit_code == 0, checked.output
        for message_id in logs.run.sent_by_ru:
            assert str(message_id) in checked.output  # every message about the worker
        assert str(logs.run.sent_by_tj[0]) not in checked.output  # and nothing else
        data = bytearray(out.read_bytes())
        for position in (20, len(data) // 2, len(data) - 30):
            altered = bytearray(data)
            altered[position] ^= 0x01
            out.write_bytes(bytes(altered))
            assert logs.audit("check-bundle", str(out)).exit_code == 1, position

    def test_no_bundle_for_an_unknown_worker(self, logs: Logs) -> None:
        out = logs.tmp / "nobody.zip"
        result = logs.audit("bundle", "--worker", "999999999", "--out", str(out), *logs.store_args("TJ"))
        assert result.exit_code == 2
        assert not out.exists()


async def test_replay_publishes_to_a_sandbox_queue_in_order(
    tmp_path: Path, dev_pki: KeyStore, agreement: Agreement, trust: TrustStore, pki_now: datetime
) -> None:
    path = tmp_path / "tj.sqlite"
    stores = [await SqliteAuditStore.open(path), await SqliteAuditStore.open(tmp_path / "ru.sqlite")]
    try:
        await run_exchange(
            tj_store=stores[0], ru_store=stores[1], state_dir=tmp_path, keys=dev_pki,
            agreement=agreement, trust=trust, start=pki_now + timedelta(days=30), rounds=1,
        )  # fmt: skip
        expected = [e.envelope async for e in stores[0].entries() if e.kind is EntryKind.RECEIVED]
    finally:
        for store in stores:
            await store.close()
    queue_name = f"audit-replay-{uuid4().hex[:8]}"
    connection = await aio_pika.connect(RABBIT_URL)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, durable=False, auto_delete=False)
        args = ["replay", "--kind", "received", "--to-queue", queue_name, "--amqp-url", RABBIT_URL]
        result = await asyncio.to_thread(runner.invoke, audit_app, [*args, "--store", str(path)])
        assert result.exit_code == 0, result.output
        received = []
        for _ in expected:
            message = await queue.get(timeout=5)
            assert message is not None
            await message.ack()
            received.append((message.body, message.headers.get("x-replay"), UUID(message.message_id or "")))
        assert [body for body, _, _ in received] == expected
        assert all(flag == "true" for _, flag, _ in received)
    finally:
        await channel.queue_delete(queue_name)
        await connection.close()
