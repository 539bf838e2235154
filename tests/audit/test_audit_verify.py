"""The auditor's pure checks: whole-log verification, proof files, worker bundles, reconciliation."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta
from uuid import UUID

import pytest

from broker.audit.bundle import about_messages, build_bundle, check_bundle, names_worker
from broker.audit.checkpoint import SignedCheckpoint, sign_checkpoint
from broker.audit.entry import AuditEntry, EntryDraft, EntryKind, entry_leaf_hash
from broker.audit.merkle import (
    consistency_ranges,
    perfect_cover,
)
from broker.audit.proofs import (
    ConsistencyProof,
    InclusionProof,
    check_consistency,
    check_inclusion,
    read_proof,
)
from broker.audit.receipt_refs import ReceiptRef
from broker.audit.reconcile import digest, reconcile
from broker.audit.verify import ExternalCheckpoint, LogVerifier, UnreadableRow, verify_log
from broker.core.errors import ExchangeError, Reason, VerificationError
from broker.core.ids import uuid7
from broker.core.trust import TrustStore
from broker.state.keystore import KeyStore
from tests.support.memory_log import Log

WORKER = "400123456"


@pytest.fixture
def log(dev_pki: KeyStore, pki_now: datetime) -> Log:
    built = Log(keys=dev_pki, start=pki_now + timedelta(days=10))
    for _ in range(3):
        built.send("worker.death")
        built.send("work_permit.cancellation")
        built.add(
            EntryDraft(
                kind=EntryKind.DELIVERED,
                time=built.now(),
                message_id=None,
                message_type=None,
                peer=None,
                envelope=b"",
            )
        )
        built.checkpoint()
    return built


def _edited(entry: AuditEntry, *, rehash: bool = False, **changes: object) -> AuditEntry:
    draft = dataclasses.replace(entry.draft(), **changes)  # type: ignore[arg-type]
    return AuditEntry.placed(
        draft, index=entry.index, leaf_hash=entry_leaf_hash(draft) if rehash else entry.leaf_hash
    )


def _finding(
    entries: Sequence[AuditEntry | UnreadableRow], trust: TrustStore, **options: object
) -> tuple[int, Reason, str]:
    report = verify_log(entries, trust=trust, **options)  # type: ignore[arg-type]
    assert report.finding is not None, "tampering went unnoticed"
    return report.finding.index, report.finding.reason, report.finding.diagnostic


class TestVerifyLog:
    def test_an_untouched_log_verifies(self, log: Log, trust: TrustStore) -> None:
        report = verify_log(log.entries, trust=trust)
        assert report.ok
        assert report.size == len(log.entries)
        assert (report.checkpoints, report.envelopes, report.origin) == (3, 6, "RU-GW")
        assert report.root == log.node(0, len(log.entries))

    def test_a_changed_field_is_named_by_its_leaf_hash(self, log: Log, trust: TrustStore) -> None:
        for index, change in (
            (0, {"peer": "TJ-MVD"}),
            (2, {"time": log.entries[2].time + timedelta(microseconds=1)}),
            (4, {"envelope": log.entries[4].envelope[:-1] + b"!"}),
        ):
            entries = list(log.entries)
            entries[index] = _edited(entries[index], **change)
            assert _finding(entries, trust)[:2] == (index, Reason.AUDIT_TAMPERED)

    def test_an_unreadable_row_is_named(self, log: Log, trust: TrustStore) -> None:
        entries: list[AuditEntry | UnreadableRow] = list(log.entries)
        entries[5] = UnreadableRow(index=5, diagnostic="kind 'sdnt' is unknown")
        assert _finding(entries, trust)[:2] == (5, Reason.AUDIT_TAMPERED)

    def test_a_missing_or_duplicated_index_is_named(self, log: Log, trust: TrustStore) -> None:
        assert _finding(log.entries[:4] + log.entries[5:], trust)[0] == 4
        assert _finding(log.entries[:4] + log.entries[3:], trust)[0] == 4

    def test_a_rehashed_edit_breaks_the_next_checkpoint(self, log: Log, trust: TrustStore) -> None:
        entries = list(log.entries)
        entries[6] = _edited(entries[6], rehash=True, time=entries[6].time + timedelta(seconds=5))
        index, reason, diagnostic = _finding(entries, trust)
        # vouched for: the 3 entries the checkpoint at index 3 signs; the next one signs 7
        assert (index, reason) == (3, Reason.AUDIT_TAMPERED)
        assert "[3, 7)" in diagnostic

    def test_a_moved_checkpoint_names_itself(self, log: Log, trust: TrustStore) -> None:
        entries = [dataclasses.replace(e, index=i) for i, e in enumerate(log.entries[1:])]
        index, reason, _ = _finding(entries, trust)
        assert (index, reason) == (2, Reason.AUDIT_CHECKPOINT_INVALID)

    def test_a_re_signed_envelope_field_is_caught_by_its_signature(self, log: Log, trust: TrustStore) -> None:
        entries = list(log.entries)
        forged = entries[1].envelope.replace(b"RU-MVD", b"RU-MIN", 1)
        entries[1] = _edited(entries[1], rehash=True, envelope=forged)
        _, reason, _ = _finding(entries, trust)
        assert reason in (Reason.SIGNATURE_INVALID, Reason.CERT_AUTHORITY_MISMATCH)
        entries = list(log.entries)
        entries[1] = _edited(entries[1], rehash=True, message_id=UUID(int=1))
        assert _finding(entries, trust)[:2] == (1, Reason.AUDIT_TAMPERED)

    def test_a_checkpoint_lagging_beyond_the_window_is_refused(self, log: Log, trust: TrustStore) -> None:
        verifier = LogVerifier(trust=trust, lag_window=1)
        log.checkpoint()  # fine: names the size right before it
        late = log.entries[-1]
        body = SignedCheckpoint.from_bytes(log.entries[3].envelope).body  # size 3, placed far later
        stale = sign_checkpoint(body, signer=log.gateway)
        entries = [*log.entries[:-1], _edited(late, rehash=True, envelope=stale.to_bytes())]
        for entry in entries:
            if verifier.feed(entry) is not None:
                break
        assert verifier.finish().finding is not None
        assert verifier.finish().finding.reason == Reason.AUDIT_CHECKPOINT_INVALID  # type: ignore[union-attr]

    def test_witnessed_checkpoints_catch_a_rewrite_and_a_truncation(
        self, log: Log, trust: TrustStore
    ) -> None:
        witnessed = [
            ExternalCheckpoint(checkpoint=SignedCheckpoint.from_bytes(e.envelope), source="TJ-GW")
            for e in log.entries
            if e.kind is EntryKind.CHECKPOINT
        ]
        assert verify_log(log.entries, trust=trust, external=witnessed).external_matched == 3
        index, reason, _ = _finding(log.entries[:7], trust, external=witnessed)
        assert (index, reason) == (7, Reason.AUDIT_WITNESS_MISMATCH)
        rewritten = Log(keys=log.keys, start=log.entries[0].time)  # same key, other history
        for _ in range(3):
            rewritten.send("worker.death")
            rewritten.checkpoint()
        assert verify_log(rewritten.entries, trust=trust).ok
        assert _finding(rewritten.entries, trust, external=witnessed)[1] == Reason.AUDIT_WITNESS_MISMATCH

    def test_an_external_checkpoint_must_itself_be_signed_by_the_log(
        self, log: Log, trust: TrustStore, dev_pki: KeyStore, pki_now: datetime
    ) -> None:
        body = SignedCheckpoint.from_bytes(log.entries[3].envelope).body
        tj = dev_pki.signer("TJ-GW", at=pki_now)
        wrong = SignedCheckpoint(
            body=dataclasses.replace(body, origin="TJ-GW"),
            signature=sign_checkpoint(dataclasses.replace(body, origin="TJ-GW"), signer=tj).signature,
        )
        with pytest.raises(VerificationError):
            LogVerifier(
                trust=trust, origin="RU-GW", external=[ExternalCheckpoint(checkpoint=wrong, source="x")]
            )


class TestProofFiles:
    def test_inclusion_proofs_check_and_every_sampled_changed_byte_fails(
        self, log: Log, trust: TrustStore
    ) -> None:
        checkpoint = SignedCheckpoint.from_bytes(log.entries[-1].envelope)
        for index in range(checkpoint.body.tree_size):
            proven = check_inclusion(
                InclusionProof.from_bytes(log.inclusion(index, checkpoint).to_bytes()), trust=trust
            )
            assert proven.draft == log.entries[index].draft()
        raw = log.inclusion(4, checkpoint).to_bytes()
        assert isinstance(read_proof(raw), InclusionProof)
        for position in range(0, len(raw), 5):
            altered = bytearray(raw)
            altered[position] ^= 0x01
            with pytest.raises(ExchangeError):
                check_inclusion(InclusionProof.from_bytes(bytes(altered)), trust=trust)

    def test_a_proof_for_another_index_fails(self, log: Log, trust: TrustStore) -> None:
        checkpoint = SignedCheckpoint.from_bytes(log.entries[-1].envelope)
        proof = dataclasses.replace(log.inclusion(4, checkpoint), index=5)
        with pytest.raises(VerificationError) as caught:
            check_inclusion(proof, trust=trust)
        assert caught.value.reason == Reason.AUDIT_PROOF_INVALID

    def test_consistency_proofs_check_and_a_changed_byte_fails(self, log: Log, trust: TrustStore) -> None:
        checkpoints = [
            SignedCheckpoint.from_bytes(e.envelope) for e in log.entries if e.kind is EntryKind.CHECKPOINT
        ]
        old, new = checkpoints[0], checkpoints[-1]
        path = tuple(log.node(a, b) for a, b in consistency_ranges(old.body.tree_size, new.body.tree_size))
        raw = ConsistencyProof(old=old, new=new, path=path).to_bytes()
        proof = read_proof(raw)
        assert isinstance(proof, ConsistencyProof)
        check_consistency(proof, trust=trust)
        for position in range(0, len(raw), 11):
            altered = bytearray(raw)
            altered[position] ^= 0x01
            with pytest.raises(ExchangeError):
                check_consistency(ConsistencyProof.from_bytes(bytes(altered)), trust=trust)

    def test_perfect_cover_is_what_proofs_are_built_from(self) -> None:
        # The auditor's proofs fold the stored perfect subtrees of each range (as the store does).
        assert [n.level for n in perfect_cover(0, 7)] == [2, 1, 0]


class TestBundle:
    def test_a_bundle_checks_and_every_sampled_changed_byte_fails(self, log: Log, trust: TrustStore) -> None:
        checkpoint = SignedCheckpoint.from_bytes(log.entries[-1].envelope)
        about = [
            e.index for e in log.entries if e.kind is EntryKind.SENT and names_worker(e.envelope, WORKER)
        ]
        assert about
        data = build_bundle(document_number=WORKER, proofs=[log.inclusion(i, checkpoint) for i in about])
        checked = check_bundle(data, trust=trust)
        assert [entry.index for entry in checked.entries] == about
        assert check_bundle(data, trust=trust).document_number == WORKER
        for position in range(0, len(data), 23):
            altered = bytearray(data)
            altered[position] ^= 0x01
            with pytest.raises(ExchangeError):
                check_bundle(bytes(altered), trust=trust)

    def test_an_entry_about_someone_else_is_refused(self, log: Log, trust: TrustStore) -> None:
        checkpoint = SignedCheckpoint.from_bytes(log.entries[-1].envelope)
        data = build_bundle(document_number="999999999", proofs=[log.inclusion(0, checkpoint)])
        with pytest.raises(VerificationError):
            check_bundle(data, trust=trust)


class TestBatchedReceipts:
    def test_references_are_checked_against_the_receipt_they_name(self, log: Log, trust: TrustStore) -> None:
        sent = [entry for entry in log.entries if entry.kind is EntryKind.SENT]
        _held, *refs = log.receipt(sent[:2])
        log.checkpoint()
        assert verify_log(log.entries, trust=trust).ok
        for change in (
            {"verdict": "rejected", "reason": "replay.stale"},  # another answer than the signed one
            {"message_id": sent[2].message_id},  # a message the receipt does not list
            {"envelope": ReceiptRef(receipt_id=uuid7(), sha256="0" * 64).to_bytes()},  # no such receipt
            {"envelope": refs[0].envelope.replace(b'"sha256":"', b'"sha256":"0')[:-3] + b'"}}'},
        ):
            entries = list(log.entries)
            entries[refs[0].index] = _edited(refs[0], rehash=True, **change)
            assert _finding(entries, trust)[:2] == (refs[0].index, Reason.AUDIT_TAMPERED), change

    def test_reconcile_counts_each_line_and_a_bundle_carries_the_receipt(
        self, log: Log, trust: TrustStore
    ) -> None:
        sent = [entry for entry in log.entries if entry.kind is EntryKind.SENT]
        held, *refs = log.receipt(sent[:1])
        checkpoint = log.checkpoint()
        as_receiver = digest("TJ", [*(_edited(e, kind=EntryKind.RECEIVED) for e in sent[:2]), held, *refs])
        gaps = reconcile(digest("RU", sent[:2]), as_receiver)
        # Only the message the receipt does not list lacks one.
        assert [(gap.message_id, "receipt-sent" in gap.problem) for gap in gaps] == [
            (sent[1].message_id, True)
        ]
        # A worker's message, its reference and the signed receipt it names: one checked bundle.
        worker = WORKER
        assert names_worker(sent[0].envelope, worker)
        about = {sent[0].message_id or UUID(int=0)}
        chosen = about_messages(log.entries, about)
        assert [entry.index for entry in chosen] == [sent[0].index, held.index, refs[0].index]
        data = build_bundle(
            document_number=worker, proofs=[log.inclusion(e.index, checkpoint) for e in chosen]
        )
        assert len(check_bundle(data, trust=trust).entries) == 3
        # A receipt listing none of the worker's messages does not belong in it.
        other, *_ = log.receipt(sent[1:2])
        later = log.checkpoint()
        data = build_bundle(
            document_number=worker, proofs=[log.inclusion(i, later) for i in (sent[0].index, other.index)]
        )
        with pytest.raises(VerificationError):
            check_bundle(data, trust=trust)
        # A proof of the reference entry checks too: it is signed by nobody, its receipt is.
        assert (
            check_inclusion(log.inclusion(refs[0].index, later), trust=trust).draft.envelope
            == refs[0].envelope
        )


def _entry(index: int, kind: EntryKind, message_id: int, body: bytes = b"m") -> AuditEntry:
    draft = EntryDraft(
        kind=kind,
        time=datetime.fromisoformat("2025-02-01T00:00:00+00:00"),
        message_id=UUID(int=message_id),
        message_type="worker.death",
        peer="X",
        envelope=body,
    )
    return AuditEntry.placed(draft, index=index, leaf_hash=entry_leaf_hash(draft))


class TestReconcile:
    def test_every_kind_of_gap_is_listed(self) -> None:
        sender = digest(
            "RU",
            [
                _entry(0, EntryKind.SENT, 1),
                _entry(1, EntryKind.SENT, 2),
                _entry(2, EntryKind.SENT, 3),
                _entry(3, EntryKind.SENT, 4),
            ],
        )
        receiver = digest(
            "TJ",
            [
                _entry(0, EntryKind.RECEIVED, 1), _entry(1, EntryKind.RECEIPT_SENT, 1),  # complete
                _entry(2, EntryKind.RECEIVED, 2, b"other"), _entry(3, EntryKind.RECEIPT_SENT, 2),
                _entry(4, EntryKind.REJECTED, 3),  # rejected but never receipted
                _entry(5, EntryKind.RECEIVED, 5), _entry(6, EntryKind.RECEIPT_SENT, 5),  # never sent
            ],
        )  # fmt: skip
        gaps = reconcile(sender, receiver)
        problems = {(gap.message_id.int, gap.log, gap.problem.split(" ")[0]) for gap in gaps}
        assert problems == {
            (2, "RU", "TJ"),  # other bytes
            (3, "RU", "TJ"),  # no receipt
            (4, "RU", "sent,"),  # nothing at all
            (4, "RU", "TJ"),  # and no receipt
            (5, "TJ", "received,"),
        }
        assert reconcile(sender, digest("TJ", []))
        assert not reconcile(digest("A", []), digest("B", []))
