"""Sealed personal data, erasure and trust updates: the pure parts, without a broker."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest
from cryptography import x509

from broker.core.agreement import Agreement
from broker.core.canonical import canonical_bytes, strict_loads
from broker.core.catalogue import sample_payloads
from broker.core.envelope import Envelope
from broker.core.errors import Reason, RemoteError, VerificationError
from broker.core.personal import (
    SEALED_KEY_HEADER,
    Decryptor,
    WrappedKey,
    decode_key_header,
    encode_key_header,
    new_data_key,
    wrap_data_key,
)
from broker.core.pki import certificate_thumbprint, create_ca, cross_sign
from broker.core.sealing import DataKeySource, SealedMessage, open_message, seal, verify_envelope
from broker.core.trust_update import EncryptionDirectory, apply_trust_update, build_trust_update
from broker.exchange.personal_keys import PersonalDataKeys, ReceivedKey
from broker.state.key_vault import KeyVault
from broker.state.keystore import KeyStore

T0 = datetime(2025, 6, 1, tzinfo=UTC)
SENT = T0 + timedelta(days=1)
PERSONAL_VALUES = ("RAKHIMOV", "FARRUKH", "400123456", "Раҳимов", "Профсоюзная")


@pytest.fixture
def keys(tmp_path: Path, agreement: Agreement) -> KeyStore:
    store = KeyStore(root=tmp_path / "keys")
    for country in agreement.countries:
        store.init_country(country, now=T0)
    for authority in agreement.authorities:
        store.issue(authority.id, authority.country, now=T0)
        store.issue_encryption(authority.id, now=T0)
    return store


def _sealed_death(keys: KeyStore, agreement: Agreement) -> tuple[SealedMessage, str]:
    trust = keys.trust_store(agreement.countries)
    directory = EncryptionDirectory.of(keys.encryption_certificates("TJ-MOL"), trust=trust, at=SENT)
    data_key = new_data_key()
    message_id = UUID("01977777-0000-7000-8000-000000000001")
    wrap = wrap_data_key(
        data_key, message_id=message_id, certificate=directory.current("TJ-MOL", trust=trust, at=SENT)
    )
    sealed = seal(
        sample_payloads()["worker.death"],
        sender="RU-MVD",
        recipient="TJ-MOL",
        signer=keys.signer("RU-MVD", at=SENT),
        created_at=SENT,
        message_id=message_id,
        data_key=data_key,
    )
    return sealed, encode_key_header([wrap])


def _opener(decryptor: Decryptor, header: str, calls: list[UUID] | None = None) -> DataKeySource:
    def data_key(envelope: Envelope) -> bytes:
        if calls is not None:
            calls.append(envelope.id)
        return decryptor.unwrap(decode_key_header(header), message_id=envelope.id)

    return data_key


def test_sealed_envelope_holds_ciphertext_and_opens_for_its_recipient(
    keys: KeyStore, agreement: Agreement
) -> None:
    sealed, header = _sealed_death(keys, agreement)
    for value in PERSONAL_VALUES:
        assert value.encode() not in sealed.raw
        assert value not in header
    trust = keys.trust_store(agreement.countries)
    opened = open_message(
        sealed.raw, trust=trust, agreement=agreement, data_key_for=_opener(keys.decryptor("TJ-MOL"), header)
    )
    assert opened.payload == sample_payloads()["worker.death"]
    # An auditor without any key still proves who sent what.
    assert verify_envelope(sealed.raw, trust=trust, agreement=agreement).signer.authority_id == "RU-MVD"


def test_a_non_recipient_cannot_open_it(keys: KeyStore, agreement: Agreement) -> None:
    sealed, header = _sealed_death(keys, agreement)
    trust = keys.trust_store(agreement.countries)
    for outsider in ("TJ-MVD", "TJ-CONSULATE-MOSCOW"):
        with pytest.raises(VerificationError) as refused:
            open_message(
                sealed.raw,
                trust=trust,
                agreement=agreement,
                data_key_for=_opener(keys.decryptor(outsider), header),
            )
        assert refused.value.reason is Reason.PAYLOAD_UNDECRYPTABLE
    # Relabelling the wrap does not help: HPKE `info` names the holder the key was sealed for.
    [wrap] = decode_key_header(header)
    relabelled = encode_key_header([type(wrap)(holder="TJ-MVD", kid=wrap.kid, enc=wrap.enc)])
    with pytest.raises(VerificationError):
        open_message(
            sealed.raw,
            trust=trust,
            agreement=agreement,
            data_key_for=_opener(keys.decryptor("TJ-MVD"), relabelled),
        )


def _received_key(keys: KeyStore, header: str) -> ReceivedKey:
    """The data key source a gateway gives `open_message` for a message that came with `header`."""
    return ReceivedKey(headers={SEALED_KEY_HEADER: header}, decryptor_for=keys.decryptor)


def _junk_wraps(keys: KeyStore, message_id: UUID) -> list[WrappedKey]:
    """What anyone on the path can add to the unsigned header: a wrap that does not open, and one
    that opens (HPKE needs only TJ-MOL's public certificate) to a data key of the attacker's."""
    [certificate] = keys.encryption_certificates("TJ-MOL")
    kid = certificate_thumbprint(certificate)
    return [
        WrappedKey(holder="TJ-MOL", kid=kid, enc=secrets.token_bytes(80)),
        wrap_data_key(new_data_key(), message_id=message_id, certificate=certificate),
    ]


def test_wraps_added_to_the_header_in_transit_do_not_stop_the_recipient(
    keys: KeyStore, agreement: Agreement
) -> None:
    sealed, header = _sealed_death(keys, agreement)
    tampered = encode_key_header([*_junk_wraps(keys, sealed.envelope.id), *decode_key_header(header)])
    opened = open_message(
        sealed.raw,
        trust=keys.trust_store(agreement.countries),
        agreement=agreement,
        data_key_for=_received_key(keys, tampered),
    )
    assert opened.payload == sample_payloads()["worker.death"]


def test_a_header_whose_wraps_for_us_all_fail_is_undecryptable(keys: KeyStore, agreement: Agreement) -> None:
    sealed, _ = _sealed_death(keys, agreement)
    replaced = encode_key_header(_junk_wraps(keys, sealed.envelope.id))
    with pytest.raises(VerificationError) as refused:
        open_message(
            sealed.raw,
            trust=keys.trust_store(agreement.countries),
            agreement=agreement,
            data_key_for=_received_key(keys, replaced),
        )
    assert refused.value.reason is Reason.PAYLOAD_UNDECRYPTABLE
    assert "none of the 2 data key wraps for TJ-MOL opens" in refused.value.diagnostic


def test_tampered_ciphertext_fails_the_signature_before_any_decryption(
    keys: KeyStore, agreement: Agreement
) -> None:
    sealed, header = _sealed_death(keys, agreement)
    document = strict_loads(sealed.raw)
    ciphertext = document["payload"]["sealed"]["ciphertext"]
    document["payload"]["sealed"]["ciphertext"] = ("A" if ciphertext[0] != "A" else "B") + ciphertext[1:]
    calls: list[UUID] = []
    with pytest.raises(VerificationError) as refused:
        open_message(
            canonical_bytes(document),
            trust=keys.trust_store(agreement.countries),
            agreement=agreement,
            data_key_for=_opener(keys.decryptor("TJ-MOL"), header, calls),
        )
    assert refused.value.reason is Reason.SIGNATURE_INVALID
    assert calls == []


def test_personal_type_in_clear_is_refused_when_sealing_is_required(
    keys: KeyStore, agreement: Agreement
) -> None:
    clear = seal(
        sample_payloads()["worker.death"],
        sender="RU-MVD",
        recipient="TJ-MOL",
        signer=keys.signer("RU-MVD", at=SENT),
        created_at=SENT,
    )
    with pytest.raises(RemoteError) as refused:
        open_message(
            clear.raw, trust=keys.trust_store(agreement.countries), agreement=agreement, require_sealed=True
        )
    assert refused.value.reason is Reason.PAYLOAD_NOT_SEALED


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[KeyVault]:
    opened = KeyVault.open(tmp_path / "vault.sqlite")
    yield opened
    opened.close()


async def test_destroying_the_data_key_erases_the_payload_but_not_the_proof(
    keys: KeyStore, agreement: Agreement, vault: KeyVault, tmp_path: Path
) -> None:
    sealed, header = _sealed_death(keys, agreement)
    message_id = sealed.envelope.id
    await vault.put(message_id, header, at=SENT)
    assert await vault.get(message_id) == header
    assert await vault.destroy(message_id, at=SENT + timedelta(days=1))
    assert await vault.get(message_id) is None
    await vault.put(message_id, header, at=SENT)  # a late redelivery cannot bring it back
    assert await vault.get(message_id) is None
    assert await vault.erased_at(message_id) == SENT + timedelta(days=1)
    assert header.encode() not in (tmp_path / "vault.sqlite").read_bytes()
    trust = keys.trust_store(agreement.countries)
    assert verify_envelope(sealed.raw, trust=trust, agreement=agreement).envelope.id == message_id


def test_crl_in_a_trust_update_revokes_for_new_messages_only(keys: KeyStore, agreement: Agreement) -> None:
    trust = keys.trust_store(agreement.countries)  # what TJ trusted before the update
    before = seal(
        sample_payloads()["employer.permit"],
        sender="RU-MINTRUD",
        recipient="TJ-MOL",
        signer=keys.signer("RU-MINTRUD", at=SENT),
        created_at=SENT,
    )
    keys.revoke("RU-MINTRUD", now=SENT + timedelta(hours=1))
    crl = keys.current_crl("RU")
    assert crl is not None
    update = build_trust_update("RU", crl=crl)
    change = apply_trust_update(
        update,
        signer_country="RU",
        trust=trust,
        directory=EncryptionDirectory(),
        at=SENT + timedelta(hours=2),
    )
    assert change.crl_number == crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    after = seal(
        sample_payloads()["employer.permit"],
        sender="RU-MINTRUD",
        recipient="TJ-MOL",
        signer=keys.signer("RU-MINTRUD", at=SENT),
        created_at=SENT + timedelta(hours=2),
    )
    with pytest.raises(VerificationError) as refused:
        open_message(after.raw, trust=change.trust, agreement=agreement)
    assert refused.value.reason is Reason.CERT_REVOKED
    assert open_message(before.raw, trust=change.trust, agreement=agreement).envelope.sender == "RU-MINTRUD"
    # The TJ CA cannot speak for Russia's PKI.
    with pytest.raises(VerificationError) as foreign:
        apply_trust_update(update, signer_country="TJ", trust=trust, directory=EncryptionDirectory(), at=SENT)
    assert foreign.value.reason is Reason.TRUST_UPDATE_INVALID


def test_a_new_ca_is_taken_only_with_a_cross_signature_from_the_current_one(
    keys: KeyStore, agreement: Agreement, tmp_path: Path
) -> None:
    trust = keys.trust_store(agreement.countries)
    old_cert = trust.anchors("RU")[0]
    old_key = keys._current_ca("RU", now=SENT)[0]
    new_key, new_cert = create_ca(country="RU", not_before=SENT, not_after=SENT + timedelta(days=3650))
    cross = cross_sign(
        old_ca_key=old_key,
        old_ca_cert=old_cert,
        new_ca_cert=new_cert,
        not_before=SENT,
        not_after=SENT + timedelta(days=365),
    )
    change = apply_trust_update(
        build_trust_update("RU", ca_rollovers=[(new_cert, cross)]),
        signer_country="RU",
        trust=trust,
        directory=EncryptionDirectory(),
        at=SENT,
    )
    assert new_cert in change.trust.anchors("RU")
    # A CA that cross-signs itself is an attacker's CA.
    _, rogue_cert = create_ca(country="RU", not_before=SENT, not_after=SENT + timedelta(days=3650))
    self_cross = cross_sign(
        old_ca_key=new_key,
        old_ca_cert=new_cert,
        new_ca_cert=rogue_cert,
        not_before=SENT,
        not_after=SENT + timedelta(days=365),
    )
    with pytest.raises(VerificationError) as refused:
        apply_trust_update(
            build_trust_update("RU", ca_rollovers=[(rogue_cert, self_cross)]),
            signer_country="RU",
            trust=trust,
            directory=EncryptionDirectory(),
            at=SENT,
        )
    assert refused.value.reason is Reason.TRUST_UPDATE_INVALID


def test_a_new_key_agreement_certificate_becomes_current(keys: KeyStore, agreement: Agreement) -> None:
    trust = keys.trust_store(agreement.countries)
    directory = EncryptionDirectory.of(keys.encryption_certificates("TJ-MOL"), trust=trust, at=SENT)
    first = directory.current("TJ-MOL", trust=trust, at=SENT)
    rotated = keys.issue_encryption("TJ-MOL", now=SENT + timedelta(hours=1))
    change = apply_trust_update(
        build_trust_update("TJ", authority_certificates=[rotated]),
        signer_country="TJ",
        trust=trust,
        directory=directory,
        at=SENT + timedelta(hours=2),
    )
    assert change.directory.current("TJ-MOL", trust=trust, at=SENT + timedelta(hours=2)) == rotated
    # Data sealed to the old key still opens: the key store keeps every generation.
    data_key = new_data_key()
    message_id = UUID("01977777-0000-7000-8000-000000000002")
    old_wrap = wrap_data_key(data_key, message_id=message_id, certificate=first)
    assert keys.decryptor("TJ-MOL").unwrap([old_wrap], message_id=message_id) == data_key


def _delivery(
    keys: KeyStore, agreement: Agreement, sealed: SealedMessage, header: str, received: str
) -> tuple[list[str], dict[str, bytes]]:
    """(holders, wrapped bytes by holder) of the header the TJ gateway delivers a received death with."""
    trust = keys.trust_store(agreement.countries)
    opened = open_message(
        sealed.raw, trust=trust, agreement=agreement, data_key_for=_opener(keys.decryptor("TJ-MOL"), header)
    )
    directory = EncryptionDirectory.of(
        (cert for a in agreement.authorities for cert in keys.encryption_certificates(a.id)),
        trust=trust,
        at=SENT,
    )
    personal = PersonalDataKeys(directory=directory, decryptor_for=keys.decryptor, vault=None)  # type: ignore[arg-type]
    delivered = personal.delivery_header(
        opened, agreement=agreement, country="TJ", trust=trust, at=SENT, received=decode_key_header(received)
    )
    assert delivered is not None
    wraps = decode_key_header(delivered)
    for wrap in wraps:  # every subscriber opens it, whether its wrap was passed on or made anew
        assert keys.decryptor(wrap.holder).unwrap([wrap], message_id=opened.envelope.id) == keys.decryptor(
            "TJ-MOL"
        ).unwrap(decode_key_header(header), message_id=opened.envelope.id)
    return [w.holder for w in wraps], {w.holder: w.enc for w in wraps}


def test_delivery_passes_the_recipients_own_wrap_on_and_wraps_anew_for_the_others(
    keys: KeyStore, agreement: Agreement
) -> None:
    sealed, header = _sealed_death(keys, agreement)
    holders, wrapped = _delivery(keys, agreement, sealed, header, received=header)
    assert "TJ-MOL" in holders
    assert len(holders) > 1  # the death goes to more than the recipient
    assert wrapped["TJ-MOL"] == decode_key_header(header)[0].enc  # the very wrap that opened it


def test_a_header_with_two_wraps_for_the_recipient_is_not_passed_on(
    keys: KeyStore, agreement: Agreement
) -> None:
    sealed, header = _sealed_death(keys, agreement)
    [wrap] = decode_key_header(header)
    doubled = encode_key_header([wrap, wrap])
    _, wrapped = _delivery(keys, agreement, sealed, header, received=doubled)
    assert wrapped["TJ-MOL"] != wrap.enc  # wrapped anew: which of the two opened it is not known here
