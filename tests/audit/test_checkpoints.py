"""Signed checkpoints, witness countersignatures, the checkpointer, and the gateway carrying them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from broker.audit.checkpoint import (
    CheckpointBody,
    SignedCheckpoint,
    WitnessRecord,
    cosign,
    sign_checkpoint,
    verify_checkpoint,
    verify_witness,
)
from broker.audit.entry import EntryDraft, EntryKind
from broker.audit.receipt_refs import is_ref
from broker.audit.stores.checkpointer import Checkpointer
from broker.audit.stores.sqlite import SqliteAuditStore
from broker.core.agreement import Agreement
from broker.core.catalogue.receipt import Checkpoint, ReceiptBatch
from broker.core.errors import Reason, VerificationError
from broker.core.jws import sign_detached
from broker.core.pki import Signer
from broker.core.trust import TrustStore
from broker.state.keystore import KeyStore
from tests.support.audit_run import sqlite_exchange

AUDIT_CORE = (
    "broker.audit.checkpoint",
    "broker.audit.verify",
    "broker.audit.proofs",
    "broker.audit.bundle",
    "broker.audit.reconcile",
)


def _body(pki_now: datetime, *, origin: str = "RU-GW", size: int = 7) -> CheckpointBody:
    return CheckpointBody(
        origin=origin, tree_size=size, root_hash=bytes(range(32)), time=pki_now + timedelta(days=3)
    )


def test_the_audit_core_loads_no_asyncio_database_or_broker() -> None:
    probe = "import importlib, json, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in AUDIT_CORE)
    probe += (
        "print(json.dumps([m for m in ('asyncio', 'sqlite3', 'asyncpg', 'aio_pika') if m in sys.modules]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(result.stdout) == []


class TestSignedCheckpoint:
    def test_round_trips_through_every_form_and_verifies(
        self, dev_pki: KeyStore, trust: TrustStore, pki_now: datetime
    ) -> None:
        signed = sign_checkpoint(_body(pki_now), signer=dev_pki.signer("RU-GW", at=pki_now))
        assert SignedCheckpoint.from_bytes(signed.to_bytes()) == signed
        assert SignedCheckpoint.from_compact(signed.compact()) == signed
        in_receipt = signed.for_receipt()
        assert (in_receipt.tree_size, in_receipt.root_hash) == (7, bytes(range(32)).hex())
        assert SignedCheckpoint.from_receipt(in_receipt) == signed
        assert verify_checkpoint(signed, trust=trust, origin="RU-GW").authority_id == "RU-GW"

    def test_a_changed_root_breaks_the_signature(
        self, dev_pki: KeyStore, trust: TrustStore, pki_now: datetime
    ) -> None:
        signed = sign_checkpoint(_body(pki_now), signer=dev_pki.signer("RU-GW", at=pki_now))
        forged = SignedCheckpoint(body=_body(pki_now, size=8), signature=signed.signature)
        with pytest.raises(VerificationError) as caught:
            verify_checkpoint(forged, trust=trust)
        assert caught.value.reason == Reason.SIGNATURE_INVALID

    def test_another_gateways_key_cannot_sign_for_this_log(
        self, dev_pki: KeyStore, trust: TrustStore, pki_now: datetime
    ) -> None:
        body = _body(pki_now)
        tj = dev_pki.signer("TJ-GW", at=pki_now)
        forged = SignedCheckpoint(
            body=body,
            signature=sign_detached(body.signing_bytes(), private_key=tj.private_key, chain=tj.chain),
        )
        with pytest.raises(VerificationError) as caught:
            verify_checkpoint(forged, trust=trust)
        assert caught.value.reason == Reason.CERT_AUTHORITY_MISMATCH
        with pytest.raises(VerificationError) as other_log:
            verify_checkpoint(
                sign_checkpoint(body, signer=dev_pki.signer("RU-GW", at=pki_now)), trust=trust, origin="TJ-GW"
            )
        assert other_log.value.reason == Reason.AUDIT_CHECKPOINT_INVALID

    def test_only_the_canonical_spelling_is_accepted(self, dev_pki: KeyStore, pki_now: datetime) -> None:
        raw = sign_checkpoint(_body(pki_now), signer=dev_pki.signer("RU-GW", at=pki_now)).to_bytes()
        for variant in (
            raw + b" ",
            json.dumps(json.loads(raw), indent=1).encode(),
            raw.replace(b'"tree_size":7', b'"tree_size":7.0'),
        ):
            with pytest.raises(VerificationError) as caught:
                SignedCheckpoint.from_bytes(variant)
            assert caught.value.reason == Reason.AUDIT_CHECKPOINT_INVALID

    def test_a_receipt_whose_plain_fields_differ_from_the_signed_ones_is_refused(
        self, dev_pki: KeyStore, pki_now: datetime
    ) -> None:
        signed = sign_checkpoint(_body(pki_now), signer=dev_pki.signer("RU-GW", at=pki_now))
        lying = Checkpoint(tree_size=9, root_hash=signed.body.root_hash.hex(), signature=signed.compact())
        with pytest.raises(VerificationError):
            SignedCheckpoint.from_receipt(lying)
        with pytest.raises(VerificationError) as unsigned:
            SignedCheckpoint.from_receipt(Checkpoint(tree_size=7, root_hash=signed.body.root_hash.hex()))
        assert unsigned.value.reason == Reason.SIGNATURE_MISSING


class TestWitness:
    def test_countersignature_verifies_and_resists_edits(
        self, dev_pki: KeyStore, trust: TrustStore, pki_now: datetime
    ) -> None:
        signed = sign_checkpoint(_body(pki_now), signer=dev_pki.signer("RU-GW", at=pki_now))
        record = cosign(signed, signer=dev_pki.signer("TJ-GW", at=pki_now), time=pki_now + timedelta(days=4))
        again = WitnessRecord.from_bytes(record.to_bytes())
        assert again == record
        verify_witness(again, trust=trust)
        moved = WitnessRecord(
            checkpoint=record.checkpoint,
            witness=record.witness,
            time=record.time + timedelta(seconds=1),
            signature=record.signature,
        )
        with pytest.raises(VerificationError) as caught:
            verify_witness(moved, trust=trust)
        assert caught.value.reason == Reason.SIGNATURE_INVALID


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteAuditStore]:
    opened = await SqliteAuditStore.open(tmp_path / "audit.sqlite")
    yield opened
    await opened.close()


def _draft(time: datetime, number: int) -> EntryDraft:
    return EntryDraft(
        kind=EntryKind.DELIVERED,
        time=time,
        message_id=None,
        message_type="x",
        peer="TJ-MOL",
        envelope=bytes([number]),
    )


class TestCheckpointer:
    async def test_concurrent_receipts_share_one_checkpoint_that_covers_them(
        self, store: SqliteAuditStore, dev_pki: KeyStore, trust: TrustStore, pki_now: datetime
    ) -> None:
        at = pki_now + timedelta(days=2)
        checkpointer = Checkpointer(
            store=store, signer=dev_pki.signer("RU-GW", at=at), trust=trust, clock=lambda: at
        )
        entries = await store.append([_draft(at, n) for n in range(5)])
        covering = await asyncio.gather(*(checkpointer.covering(entry.index) for entry in entries))
        assert len({c.to_bytes() for c in covering}) == 1
        assert covering[0].body.tree_size == 5
        assert covering[0].body.root_hash == await store.root(5)
        assert (await store.entry(5)).kind is EntryKind.CHECKPOINT
        assert await store.size() == 6  # one CHECKPOINT entry, not five
        assert await checkpointer.covering(3) is covering[0]

    async def test_receipts_soon_after_a_checkpoint_wait_and_share_the_next(
        self, store: SqliteAuditStore, dev_pki: KeyStore, trust: TrustStore, pki_now: datetime
    ) -> None:
        at = pki_now + timedelta(days=2)
        checkpointer = Checkpointer(
            store=store, signer=dev_pki.signer("RU-GW", at=at), trust=trust, clock=lambda: at,
            min_interval_seconds=1.0,  # far longer than the pause below, even on a loaded machine
        )  # fmt: skip
        [first] = await store.append([_draft(at, 0)])
        await checkpointer.covering(first.index)  # signed at once: nothing was signed before
        [second] = await store.append([_draft(at, 1)])
        waiting = asyncio.create_task(checkpointer.covering(second.index))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # inside the window it waits for the next signature ...
        [third] = await store.append([_draft(at, 2)])
        shared = await checkpointer.covering(third.index)
        assert await waiting is shared  # ... which then covers what arrived meanwhile as well
        assert shared.body.tree_size > third.index
        kinds = [entry.kind async for entry in store.entries()]
        assert kinds.count(EntryKind.CHECKPOINT) == 2

    async def test_a_rotated_gateway_key_signs_the_next_checkpoint(
        self, store: SqliteAuditStore, tmp_path: Path, pki_now: datetime
    ) -> None:
        keys = KeyStore(root=tmp_path / "keys")
        keys.init_country("RU", now=pki_now)
        keys.issue("RU-GW", "RU", now=pki_now)
        at = pki_now + timedelta(days=2)
        trust = keys.trust_store(["RU"])
        old = keys.signer("RU-GW", at=at)
        checkpointer = Checkpointer(store=store, signer=old, trust=trust, clock=lambda: at)
        [first] = await store.append([_draft(at, 0)])
        before = await checkpointer.covering(first.index)
        keys.rotate("RU-GW", now=at)
        new = keys.signer("RU-GW", at=at + timedelta(seconds=1))
        assert new.chain[0] != old.chain[0]
        checkpointer.replace_signer(new)
        [second] = await store.append([_draft(at, 1)])
        after = await checkpointer.covering(second.index)
        assert verify_checkpoint(before, trust=trust).certificate == old.chain[0]
        assert verify_checkpoint(after, trust=trust).certificate == new.chain[0]
        with pytest.raises(ValueError, match="cannot sign"):
            checkpointer.replace_signer(dev_signer_of_another_gateway(keys, pki_now))

    async def test_signs_every_n_entries_and_once_more_on_stop(
        self, store: SqliteAuditStore, dev_pki: KeyStore, trust: TrustStore, pki_now: datetime
    ) -> None:
        at = pki_now + timedelta(days=2)
        checkpointer = Checkpointer(
            store=store, signer=dev_pki.signer("RU-GW", at=at), trust=trust, every_entries=3,
            every_seconds=3600, poll_seconds=0.01, clock=lambda: at,
        )  # fmt: skip
        await checkpointer.start()
        await store.append([_draft(at, n) for n in range(3)])
        for _ in range(200):
            if checkpointer.latest is not None:
                break
            await asyncio.sleep(0.01)
        assert checkpointer.latest is not None
        assert checkpointer.latest.body.tree_size == 3
        await store.append([_draft(at, 9)])
        await checkpointer.stop()
        assert checkpointer.latest.body.tree_size == 5  # 3 entries, the checkpoint, and one more
        kinds = [entry.kind async for entry in store.entries()]
        assert kinds.count(EntryKind.CHECKPOINT) == 2

    async def test_witnesses_a_peer_checkpoint_once_and_refuses_a_forged_one(
        self, store: SqliteAuditStore, dev_pki: KeyStore, trust: TrustStore, pki_now: datetime
    ) -> None:
        at = pki_now + timedelta(days=3)
        checkpointer = Checkpointer(
            store=store, signer=dev_pki.signer("TJ-GW", at=at), trust=trust, clock=lambda: at
        )
        peer = sign_checkpoint(_body(pki_now), signer=dev_pki.signer("RU-GW", at=pki_now)).for_receipt()
        record = await checkpointer.witness(peer, origin="RU-GW")
        assert record is not None
        assert record.witness == "TJ-GW"
        assert await checkpointer.witness(peer, origin="RU-GW") is None
        [entry] = [entry async for entry in store.entries()]
        assert entry.kind is EntryKind.WITNESS
        assert WitnessRecord.from_bytes(entry.envelope) == record
        forged = Checkpoint(tree_size=7, root_hash="00" * 32, signature=peer.signature)
        with pytest.raises(VerificationError):
            await checkpointer.witness(forged, origin="RU-GW")
        with pytest.raises(VerificationError) as wrong_origin:
            await checkpointer.witness(peer, origin="TJ-GW")
        assert wrong_origin.value.reason == Reason.AUDIT_CHECKPOINT_INVALID


async def test_interleaved_receipts_witness_each_tree_once_and_a_second_root_is_kept_as_evidence(
    store: SqliteAuditStore, dev_pki: KeyStore, trust: TrustStore, pki_now: datetime
) -> None:
    at = pki_now + timedelta(days=3)
    checkpointer = Checkpointer(
        store=store, signer=dev_pki.signer("TJ-GW", at=at), trust=trust, clock=lambda: at
    )
    ru = dev_pki.signer("RU-GW", at=pki_now)
    older = sign_checkpoint(_body(pki_now, size=7), signer=ru).for_receipt()
    newer = sign_checkpoint(_body(pki_now, size=9), signer=ru).for_receipt()
    records = [await checkpointer.witness(c, origin="RU-GW") for c in (older, newer, older, newer, older)]
    assert [r is not None for r in records] == [True, True, False, False, False]
    other_root = CheckpointBody(
        origin="RU-GW", tree_size=7, root_hash=bytes(32), time=pki_now + timedelta(days=3)
    )
    forked = sign_checkpoint(other_root, signer=ru).for_receipt()
    with capture_logs() as events:
        assert await checkpointer.witness(forked, origin="RU-GW") is not None
    assert [e["event"] for e in events if e["log_level"] == "warning"] == ["checkpoint.equivocation"]
    kinds = [entry.kind async for entry in store.entries()]
    assert kinds == [EntryKind.WITNESS] * 3


async def test_gateways_put_covering_checkpoints_in_receipts_and_witness_each_other(
    tmp_path: Path, dev_pki: KeyStore, agreement: Agreement, trust: TrustStore, pki_now: datetime
) -> None:
    async with sqlite_exchange(
        tmp_path, keys=dev_pki, agreement=agreement, trust=trust, start=pki_now + timedelta(days=30), rounds=1
    ) as stores:
        for country, peer_country in (("TJ", "RU"), ("RU", "TJ")):
            peer_gateway = agreement.gateway(peer_country).id
            entries = [entry async for entry in stores[country].entries()]
            witnessed = {
                WitnessRecord.from_bytes(e.envelope).checkpoint.body.tree_size
                for e in entries
                if e.kind is EntryKind.WITNESS
            }
            # The signed receipts (batched: one per window), not the per-message references to them.
            receipts = [e for e in entries if e.kind is EntryKind.RECEIPT_RECEIVED and not is_ref(e.envelope)]
            assert receipts
            answers = []
            for entry in receipts:
                batch = ReceiptBatch.model_validate_json(json.dumps(json.loads(entry.envelope)["payload"]))
                answers += batch.receipts()
            for receipt in answers:
                assert receipt.checkpoint is not None
                assert receipt.audit_index is not None
                signed = SignedCheckpoint.from_receipt(receipt.checkpoint)
                verify_checkpoint(signed, trust=trust, origin=peer_gateway)
                assert signed.body.tree_size > receipt.audit_index
                assert signed.body.tree_size in witnessed
                # the checkpoint is the peer's real tree at that size
                assert signed.body.root_hash == await stores[peer_country].root(signed.body.tree_size)


def dev_signer_of_another_gateway(keys: KeyStore, at: datetime) -> Signer:
    keys.init_country("TJ", now=at)
    keys.issue("TJ-GW", "TJ", now=at)
    return keys.signer("TJ-GW", at=at + timedelta(days=2))
