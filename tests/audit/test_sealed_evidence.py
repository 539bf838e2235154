"""Sealed personal data in a worker's bundle: opened with the auditor's key, proved offline (pure).

RU's log holds sealed death notices and permit cancellations; the key vault's rows wrap each data key
for RU-AUDITOR (as the gateway does). The auditor opens them, the bundle carries each opened payload
with its data key, and `check_bundle` decrypts the signed ciphertext itself: any other text, key or
message is refused.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from broker.audit.bundle import MANIFEST, build_bundle, check_bundle, pack_members
from broker.audit.entry import AuditEntry
from broker.audit.sealed_evidence import (
    NO_KEY_GIVEN,
    NOT_FOR_THESE_KEYS,
    NOT_IN_VAULT,
    SealedSearch,
    sealed_envelope,
    search_sealed,
)
from broker.core.agreement import Agreement
from broker.core.canonical import canonical_bytes, strict_loads
from broker.core.catalogue import payload_to_json
from broker.core.catalogue.death import WorkerDeath
from broker.core.catalogue.samples import sample_payloads
from broker.core.envelope import Envelope
from broker.core.errors import Reason, VerificationError
from broker.core.jws import b64url
from broker.core.personal import encode_key_header, new_data_key, wrap_data_key
from broker.core.trust import TrustStore
from broker.exchange.devkit import create_dev_pki
from broker.state.keystore import KeyStore
from tests.support.memory_log import Log

WORKER = "400123456"
AUDITOR = "RU-AUDITOR"
ERASED_AT = datetime.fromisoformat("2025-03-01T10:00:00+00:00")


class SealedLog:
    """RU's log with sealed messages, and the key vault rows the gateway keeps for them."""

    def __init__(self, keys: KeyStore, start: datetime) -> None:
        self.log = Log(keys=keys, start=start)
        self.keys = keys
        self.wrapped: dict[UUID, str] = {}
        self.data_keys: dict[UUID, bytes] = {}

    def send(self, message_type: str, *, payload: Any = None, holder: str = AUDITOR) -> AuditEntry:
        data_key = new_data_key()
        entry = self.log.send(message_type, payload=payload, data_key=data_key)
        assert entry.message_id is not None
        certificate = self.keys.encryption_certificates(holder)[-1]
        wrap = wrap_data_key(data_key, message_id=entry.message_id, certificate=certificate)
        self.wrapped[entry.message_id] = encode_key_header([wrap])
        self.data_keys[entry.message_id] = data_key
        return entry

    def envelopes(self) -> dict[UUID, Envelope]:
        found = {}
        for entry in self.log.entries:
            envelope = sealed_envelope(entry.envelope)
            if envelope is not None:
                found[envelope.id] = envelope
        return found


def key_of(keys: KeyStore, authority: str) -> list[X25519PrivateKey]:
    return list(keys.decryptor(authority).keys.values())


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory, agreement: Agreement, pki_now: datetime) -> KeyStore:
    """Both kinds of key for every authority (the session's key store has signing keys only)."""
    store = KeyStore(root=tmp_path_factory.mktemp("sealing-keys"), crl_validity_days=366)
    create_dev_pki(store, agreement, now=pki_now + timedelta(hours=1))
    return store


@pytest.fixture(scope="module")
def trust(keys: KeyStore, agreement: Agreement) -> TrustStore:
    return keys.trust_store(agreement.countries)


@pytest.fixture
def sealed(keys: KeyStore, pki_now: datetime) -> SealedLog:
    built = SealedLog(keys, pki_now + timedelta(days=10))
    built.send("worker.death")
    built.send("work_permit.cancellation")
    built.log.checkpoint()
    return built


def members_of(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def bundle_of(sealed: SealedLog, search: SealedSearch) -> bytes:
    checkpoint = sealed.log.checkpoint()
    opened = [item for item in search.opened if WORKER.encode() in item.plaintext]
    about = {item.message_id for item in opened}
    proofs = [sealed.log.inclusion(e.index, checkpoint) for e in sealed.log.entries if e.message_id in about]
    return build_bundle(document_number=WORKER, proofs=proofs, opened=opened, sealed=search)


def test_the_auditor_opens_sealed_payloads_and_the_bundle_proves_the_opened_text(
    sealed: SealedLog, keys: KeyStore, trust: TrustStore
) -> None:
    erased = sealed.send("worker.death")
    unkept = sealed.send("worker.death")
    assert erased.message_id is not None
    assert unkept.message_id is not None
    del sealed.wrapped[erased.message_id], sealed.wrapped[unkept.message_id]

    search = search_sealed(
        sealed.envelopes(),
        wrapped=sealed.wrapped,
        erased={erased.message_id: ERASED_AT},
        keys=key_of(keys, AUDITOR),
    )

    assert len(search.opened) == 2
    assert [(item.message_id, item.erased_at) for item in search.erased] == [(erased.message_id, ERASED_AT)]
    assert search.not_searched == {NOT_IN_VAULT: 1}
    samples = sample_payloads()
    expected = {
        canonical_bytes(payload_to_json(samples[t])) for t in ("worker.death", "work_permit.cancellation")
    }
    assert {item.plaintext for item in search.opened} == expected

    checked = check_bundle(bundle_of(sealed, search), trust=trust)
    assert {item.message_id for item in checked.opened} == {item.message_id for item in search.opened}
    assert {item.plaintext for item in checked.opened} == expected
    assert [(item.message_id, item.erased_at) for item in checked.erased] == [(erased.message_id, ERASED_AT)]
    assert checked.not_searched == {NOT_IN_VAULT: 1}


def test_without_the_auditors_key_sealed_messages_are_counted_not_searched(
    sealed: SealedLog, keys: KeyStore
) -> None:
    envelopes = sealed.envelopes()
    assert search_sealed(envelopes, wrapped=sealed.wrapped, erased={}, keys=[]).not_searched == {
        NO_KEY_GIVEN: 2
    }
    # The ministry's key opens nothing wrapped for the auditor alone.
    other = search_sealed(envelopes, wrapped=sealed.wrapped, erased={}, keys=key_of(keys, "RU-MINTRUD"))
    assert (other.opened, other.not_searched) == ((), {NOT_FOR_THESE_KEYS: 2})


def _with_opened(data: bytes, change: Callable[[dict[str, Any]], None], index: int = 0) -> bytes:
    """The bundle re-packed with the `index`-th opened payload changed (and nothing else)."""
    members = members_of(data)
    positions = [i for i, (name, _) in enumerate(members) if name.startswith("opened/")]
    name, raw = members[positions[index]]
    document = strict_loads(raw)
    change(document)
    members[positions[index]] = (name, canonical_bytes(document))
    return pack_members(members)


def _surname(document: dict[str, Any]) -> None:
    document["payload"]["worker"]["surname_latin"] = "OTHER"


@pytest.mark.parametrize(
    ("what", "change"),
    [
        ("another text than the sealed one", _surname),
        ("a wrong data key", lambda d: d.update(data_key=b64url(bytes(32)))),
        ("the key of the other message", None),
        ("another message id", lambda d: d.update(message_id=str(UUID(int=7)))),
    ],
)
def test_an_opened_payload_other_than_the_sealed_one_is_refused(
    sealed: SealedLog, keys: KeyStore, trust: TrustStore, what: str, change: Any
) -> None:
    search = search_sealed(sealed.envelopes(), wrapped=sealed.wrapped, erased={}, keys=key_of(keys, AUDITOR))
    data = bundle_of(sealed, search)
    if change is None:  # swap in the data key of the other opened message

        def change(document: dict[str, Any]) -> None:
            [other] = [o for o in search.opened if str(o.message_id) != document["message_id"]]
            document["data_key"] = b64url(other.data_key)

    with pytest.raises(VerificationError) as refused:
        check_bundle(_with_opened(data, change), trust=trust)
    assert refused.value.reason == Reason.AUDIT_PROOF_INVALID, what


def test_an_opened_payload_about_another_worker_is_refused(
    sealed: SealedLog, keys: KeyStore, trust: TrustStore
) -> None:
    death = sample_payloads()["worker.death"]
    assert isinstance(death, WorkerDeath)
    document = death.worker.identity_document.model_copy(update={"number": "400999999"})
    worker = death.worker.model_copy(update={"identity_document": document})
    other = sealed.send("worker.death", payload=death.model_copy(update={"worker": worker}))
    search = search_sealed(sealed.envelopes(), wrapped=sealed.wrapped, erased={}, keys=key_of(keys, AUDITOR))
    checkpoint = sealed.log.checkpoint()
    about = {item.message_id for item in search.opened}
    proofs = [sealed.log.inclusion(e.index, checkpoint) for e in sealed.log.entries if e.message_id in about]
    # The bundler put in a payload that does not name the worker: it discloses someone else's data.
    data = build_bundle(document_number=WORKER, proofs=proofs, opened=search.opened, sealed=search)
    with pytest.raises(VerificationError, match="does not name document"):
        check_bundle(data, trust=trust)
    assert other.message_id in {item.message_id for item in search.opened}


def test_a_format_1_bundle_without_opened_payloads_still_checks(sealed: SealedLog, trust: TrustStore) -> None:
    clear = sealed.log.send("worker.death")  # in clear, as before personal data was sealed
    checkpoint = sealed.log.checkpoint()
    data = build_bundle(document_number=WORKER, proofs=[sealed.log.inclusion(clear.index, checkpoint)])
    members = members_of(data)
    manifest = strict_loads(members[0][1])
    old = {key: manifest[key] for key in ("checkpoint", "entries", "worker_document_number")}
    members[0] = (MANIFEST, canonical_bytes({**old, "format": "labour-exchange-audit-bundle/1"}))
    checked = check_bundle(pack_members(members), trust=trust)
    assert [entry.index for entry in checked.entries] == [clear.index]
    assert (checked.opened, checked.erased, checked.not_searched) == ([], [], {})
