"""Trust bundles carry every public piece a peer needs, and an import checks all of it before keeping any."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.x509.oid import NameOID

from broker.core.errors import ConfigError, Reason, VerificationError
from broker.core.ids import uuid7
from broker.core.personal import Decryptor, OwnKeyMissing, new_data_key, wrap_data_key
from broker.core.pki import certificate_thumbprint
from broker.core.trust_update import EncryptionDirectory
from broker.state.key_files import cert_pem
from broker.state.keystore import KeyStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


class TwoCountries:
    """Tajikistan with two authorities (both kinds of key), Russia with its own CA, nothing exchanged."""

    def __init__(self, root: Path) -> None:
        self.tj = KeyStore(root=root / "tj")
        self.ru = KeyStore(root=root / "ru")
        self.tj.init_country("TJ", now=T0)
        self.ru.init_country("RU", now=T0)
        for authority in ("TJ-MOL", "TJ-CONSULATE-MOSCOW"):
            self.tj.issue(authority, "TJ", now=T0)
            self.tj.issue_encryption(authority, now=T0)


@pytest.fixture
def countries(tmp_path: Path) -> TwoCountries:
    return TwoCountries(tmp_path)


def test_a_bundle_carries_signing_and_key_agreement_certificates_and_never_a_key(
    countries: TwoCountries,
) -> None:
    bundle = countries.tj.export_bundle("TJ")
    assert b"PRIVATE KEY" not in bundle
    for authority in ("TJ-MOL", "TJ-CONSULATE-MOSCOW"):
        for cert in countries.tj.signing_certificates(authority) + countries.tj.encryption_certificates(
            authority
        ):
            assert cert_pem(cert) in bundle

    imported = countries.ru.import_bundle(None, bundle)
    assert (imported.country, imported.ca_certificates, imported.crl_number) == ("TJ", 1, 1)
    assert (imported.signing_certificates, imported.key_agreement_certificates) == (2, 2)

    # What the Russian gateway needs to seal a death notice for the Tajik ministry is now there.
    trust = countries.ru.trust_store(["RU", "TJ"])
    directory = EncryptionDirectory.of(
        countries.ru.encryption_certificates("TJ-MOL"), trust=trust, at=T0 + DAY
    )
    assert (
        directory.current("TJ-MOL", trust=trust, at=T0 + DAY)
        == countries.tj.encryption_certificates("TJ-MOL")[0]
    )


def test_a_certificate_that_does_not_chain_to_the_bundles_ca_is_refused_and_nothing_is_kept(
    countries: TwoCountries, tmp_path: Path
) -> None:
    # A second "TJ" CA (same name, other key) certifies a TJ-MOL key: pasted into the real bundle.
    impostor = KeyStore(root=tmp_path / "impostor")
    impostor.init_country("TJ", now=T0)
    forged = impostor.issue_encryption("TJ-MOL", now=T0)
    with pytest.raises(ConfigError) as caught:
        countries.ru.import_bundle(None, countries.tj.export_bundle("TJ") + cert_pem(forged))
    assert caught.value.reason is Reason.CERT_UNTRUSTED
    assert not (countries.ru.root / "peers" / "TJ").exists()


def test_a_bundle_whose_ca_certified_another_countrys_authority_is_refused(countries: TwoCountries) -> None:
    # The RU CA (really RU's) signs a certificate naming TJ-MOL: it may only certify RU authorities.
    ca_key, ca_cert = countries.ru._current_ca("RU", now=T0)
    public_key = X25519PrivateKey.generate().public_key()
    name = x509.Name(
        [x509.NameAttribute(NameOID.COUNTRY_NAME, "RU"), x509.NameAttribute(NameOID.COMMON_NAME, "TJ-MOL")]
    )
    usage = x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=True, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
    )  # fmt: skip
    claim = (
        x509.CertificateBuilder().subject_name(name).issuer_name(ca_cert.subject).public_key(public_key)
        .serial_number(x509.random_serial_number()).not_valid_before(T0).not_valid_after(T0 + DAY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .sign(private_key=ca_key, algorithm=None)
    )  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        countries.tj.import_bundle("RU", countries.ru.export_bundle("RU") + cert_pem(claim))
    assert caught.value.reason is Reason.CERT_AUTHORITY_MISMATCH
    assert not (countries.tj.root / "peers" / "RU").exists()


def test_an_older_crl_cannot_replace_a_newer_one(countries: TwoCountries) -> None:
    old_bundle = countries.tj.export_bundle("TJ")
    [mol] = countries.tj.signing_certificates("TJ-MOL")
    countries.tj.revoke("TJ-MOL", mol.serial_number, now=T0 + DAY)
    countries.ru.import_bundle("TJ", countries.tj.export_bundle("TJ"))
    with pytest.raises(ConfigError) as caught:
        countries.ru.import_bundle("TJ", old_bundle)  # would un-revoke TJ-MOL's key
    assert caught.value.reason is Reason.CONFIG_INVALID
    assert "older" in caught.value.diagnostic
    crl = countries.ru.trust_store(["TJ"]).crls("TJ")[0]
    assert crl.get_revoked_certificate_by_serial_number(mol.serial_number) is not None


def test_a_key_agreement_certificate_can_be_revoked(countries: TwoCountries) -> None:
    [sealing] = countries.tj.encryption_certificates("TJ-MOL")
    assert countries.tj.revoke("TJ-MOL", sealing.serial_number, now=T0 + DAY) == [sealing.serial_number]
    countries.ru.import_bundle("TJ", countries.tj.export_bundle("TJ"))
    trust = countries.ru.trust_store(["RU", "TJ"])
    directory = EncryptionDirectory.of(countries.ru.encryption_certificates("TJ-MOL"), trust=trust, at=T0)
    with pytest.raises(ConfigError) as caught:  # nobody seals to a revoked key
        directory.current("TJ-MOL", trust=trust, at=T0 + 2 * DAY)
    assert caught.value.reason is Reason.KEY_MISSING


def test_the_inventory_shows_both_kinds_validity_revocation_and_the_peers_certificates(
    countries: TwoCountries,
) -> None:
    [consulate_key] = countries.tj.encryption_certificates("TJ-CONSULATE-MOSCOW")
    countries.tj.revoke("TJ-CONSULATE-MOSCOW", consulate_key.serial_number, now=T0 + DAY)
    countries.ru.import_bundle("TJ", countries.tj.export_bundle("TJ"))
    records = {(r.kind, r.usage, r.holder): r for r in countries.ru.inventory()}
    assert set(records) == {
        ("ca", "ca", "RU Labour Exchange CA"),
        ("peer-ca", "ca", "TJ Labour Exchange CA"),
        ("peer-authority", "signing", "TJ-MOL"),
        ("peer-authority", "key-agreement", "TJ-MOL"),
        ("peer-authority", "signing", "TJ-CONSULATE-MOSCOW"),
        ("peer-authority", "key-agreement", "TJ-CONSULATE-MOSCOW"),
    }
    revoked = records["peer-authority", "key-agreement", "TJ-CONSULATE-MOSCOW"]
    assert revoked.revoked_at == T0 + DAY
    assert revoked.status(T0 + 2 * DAY) == "revoked"
    assert revoked.status(T0) == "valid"
    assert records["peer-authority", "signing", "TJ-MOL"].status(T0 + 400 * DAY) == "expired"
    assert not any(record.has_private_key for record in records.values() if record.kind.startswith("peer"))
    own = {(r.kind, r.usage, r.holder): r for r in countries.tj.inventory()}
    assert own["authority", "key-agreement", "TJ-MOL"].has_private_key


def test_a_certificate_of_ours_without_its_private_key_is_our_own_failure_not_the_senders(
    countries: TwoCountries,
) -> None:
    [kept] = countries.tj.encryption_certificates("TJ-MOL")
    lost = countries.tj.issue_encryption("TJ-MOL", now=T0 + DAY)
    (
        countries.tj.root
        / "TJ"
        / "authorities"
        / "TJ-MOL"
        / "encryption"
        / "private"
        / f"{lost.serial_number:x}.key.pem"
    ).unlink()
    decryptor = countries.tj.decryptor("TJ-MOL")
    assert set(decryptor.keys) == {certificate_thumbprint(kept)}
    assert decryptor.missing == {certificate_thumbprint(lost)}

    message_id = uuid7()
    data_key = new_data_key()
    with pytest.raises(OwnKeyMissing) as caught:
        decryptor.unwrap(
            [wrap_data_key(data_key, message_id=message_id, certificate=lost)], message_id=message_id
        )
    assert caught.value.reason is Reason.KEY_MISSING
    assert certificate_thumbprint(lost) in caught.value.diagnostic
    # A key we hold still opens; a made-up kid is still the sender's (or the path's) fault.
    assert (
        decryptor.unwrap(
            [wrap_data_key(data_key, message_id=message_id, certificate=kept)], message_id=message_id
        )
        == data_key
    )
    stranger = Decryptor(authority_id="TJ-MOL", keys=decryptor.keys, missing=frozenset())
    with pytest.raises(VerificationError) as refused:
        stranger.unwrap(
            [wrap_data_key(data_key, message_id=message_id, certificate=lost)], message_id=message_id
        )
    assert refused.value.reason is Reason.PAYLOAD_UNDECRYPTABLE
