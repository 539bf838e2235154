"""The keys/ layout on disk, file modes, rotation and revocation, bundles, and `broker keys` commands."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from typer.testing import CliRunner

from broker.cli.keys import keys_app
from broker.core.errors import ConfigError, Reason, VerificationError
from broker.state.keystore import KeyStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def tj_store(tmp_path: Path) -> KeyStore:
    store = KeyStore(root=tmp_path / "keys")
    store.init_country("TJ", now=T0)
    return store


def test_init_writes_the_ca_layout_with_private_key_0600(tj_store: KeyStore) -> None:
    root = tj_store.root
    cert_path = root / "TJ" / "ca" / "ca-1.cert.pem"
    key_path = root / "TJ" / "ca" / "private" / "ca-1.key.pem"
    assert x509.load_pem_x509_certificate(cert_path.read_bytes()).subject.rfc4514_string() == (
        "CN=TJ Labour Exchange CA,C=TJ"
    )
    assert _mode(key_path) == 0o600
    assert _mode(key_path.parent) == 0o700
    assert _mode(root) == 0o700
    assert _mode(root / "TJ") == 0o700
    ca_key = x509.load_pem_x509_certificate(cert_path.read_bytes()).public_key()
    assert isinstance(ca_key, Ed25519PublicKey)
    assert x509.load_pem_x509_crl((root / "TJ" / "crl.pem").read_bytes()).is_signature_valid(ca_key)


def test_init_twice_is_refused(tj_store: KeyStore) -> None:
    with pytest.raises(ConfigError) as caught:
        tj_store.init_country("TJ", now=T0)
    assert caught.value.reason is Reason.CONFIG_INVALID


def test_private_key_is_created_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        store = KeyStore(root=tmp_path / "keys")
        store.init_country("TJ", now=T0)
        cert = store.issue("TJ-MOL", "TJ", now=T0)
    finally:
        os.umask(previous)
    key_path = (
        tmp_path / "keys" / "TJ" / "authorities" / "TJ-MOL" / "private" / f"{cert.serial_number:x}.key.pem"
    )
    assert _mode(key_path) == 0o600
    assert _mode(key_path.parent) == 0o700


def test_issue_writes_cert_and_key_and_signer_verifies(tj_store: KeyStore) -> None:
    cert = tj_store.issue("TJ-MOL", "TJ", now=T0, display_name="Ministry of Labour")
    directory = tj_store.root / "TJ" / "authorities" / "TJ-MOL"
    assert (directory / f"{cert.serial_number:x}.cert.pem").is_file()
    signer = tj_store.signer("TJ-MOL", at=T0 + DAY)
    assert signer.authority_id == "TJ-MOL"
    assert signer.chain[0] == cert
    assert signer.private_key.public_key() == cert.public_key()
    identity = tj_store.trust_store(["TJ"]).verify_signer(signer.chain, at=T0 + DAY)
    assert identity.authority_id == "TJ-MOL"
    # the CA's own certificate closes the chain
    cert.verify_directly_issued_by(signer.chain[1])


def test_issue_refuses_mismatched_country_existing_authority_and_missing_ca(tj_store: KeyStore) -> None:
    with pytest.raises(ConfigError):
        tj_store.issue("RU-MVD", "TJ", now=T0)
    tj_store.issue("TJ-MOL", "TJ", now=T0)
    with pytest.raises(ConfigError):
        tj_store.issue("TJ-MOL", "TJ", now=T0)
    with pytest.raises(ConfigError) as caught:
        tj_store.issue("RU-MVD", "RU", now=T0)
    assert caught.value.reason is Reason.KEY_MISSING


def test_certificate_never_outlives_its_ca(tmp_path: Path) -> None:
    store = KeyStore(root=tmp_path)
    ca = store.init_country("TJ", now=T0, validity_days=30)
    cert = store.issue("TJ-MOL", "TJ", now=T0, validity_days=365)
    assert cert.not_valid_after_utc == ca.not_valid_after_utc


def test_rotation_keeps_both_certificates_valid_and_signer_picks_the_newest(tj_store: KeyStore) -> None:
    old = tj_store.issue("TJ-MOL", "TJ", now=T0, display_name="Ministry of Labour")
    new = tj_store.rotate("TJ-MOL", now=T0 + 300 * DAY)
    assert old.serial_number != new.serial_number
    assert new.subject == old.subject  # display name carried over
    trust = tj_store.trust_store(["TJ"])
    overlap = T0 + 330 * DAY
    signer = tj_store.signer("TJ-MOL", at=overlap)
    assert signer.chain[0] == new
    assert trust.verify_signer([old], at=overlap).authority_id == "TJ-MOL"
    assert trust.verify_signer(signer.chain, at=overlap).authority_id == "TJ-MOL"
    # before the rotation the old key is the only one valid
    assert tj_store.signer("TJ-MOL", at=T0 + DAY).chain[0] == old


def test_rotate_unknown_authority_is_key_missing(tj_store: KeyStore) -> None:
    with pytest.raises(ConfigError) as caught:
        tj_store.rotate("TJ-MOL", now=T0)
    assert caught.value.reason is Reason.KEY_MISSING


def test_revoke_one_serial_rewrites_the_crl_and_revoked_json(tj_store: KeyStore) -> None:
    old = tj_store.issue("TJ-MOL", "TJ", now=T0)
    new = tj_store.rotate("TJ-MOL", now=T0 + 10 * DAY)
    revoked_at = T0 + 20 * DAY
    assert tj_store.revoke("TJ-MOL", old.serial_number, now=revoked_at) == [old.serial_number]
    recorded = json.loads((tj_store.root / "TJ" / "revoked.json").read_text())
    assert recorded == {f"{old.serial_number:x}": revoked_at.isoformat()}
    trust = tj_store.trust_store(["TJ"])
    with pytest.raises(VerificationError) as caught:
        trust.verify_signer([old], at=revoked_at + DAY)
    assert caught.value.reason is Reason.CERT_REVOKED
    assert trust.verify_signer([old], at=revoked_at - DAY).authority_id == "TJ-MOL"
    assert trust.verify_signer([new], at=revoked_at + DAY).authority_id == "TJ-MOL"
    assert tj_store.signer("TJ-MOL", at=revoked_at + DAY).chain[0] == new
    # Revoking again keeps the first revocation time; the CRL number still goes up.
    assert tj_store.revoke("TJ-MOL", old.serial_number, now=revoked_at + DAY) == []
    crl = x509.load_pem_x509_crl((tj_store.root / "TJ" / "crl.pem").read_bytes())
    entry = crl.get_revoked_certificate_by_serial_number(old.serial_number)
    assert entry is not None
    assert entry.revocation_date_utc == revoked_at
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 3


def test_reissuing_the_crl_keeps_its_revocations_and_moves_its_next_update(tj_store: KeyStore) -> None:
    old = tj_store.issue("TJ-MOL", "TJ", now=T0)
    tj_store.revoke("TJ-MOL", old.serial_number, now=T0 + DAY)
    due = T0 + 31 * DAY  # revoked at T0 + 1 day, 30 days' validity
    trust = tj_store.trust_store(["TJ"], crl_grace=DAY)
    with pytest.raises(VerificationError) as stale:
        trust.verify_signer(
            [tj_store.issue("TJ-MINISTRY-X", "TJ", now=T0)], at=T0, revocation_at=due + 2 * DAY
        )
    assert stale.value.reason is Reason.CRL_STALE

    crl = tj_store.reissue_crl("TJ", now=due)
    assert crl.next_update_utc == due + 30 * DAY
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 3
    entry = crl.get_revoked_certificate_by_serial_number(old.serial_number)
    assert entry is not None
    assert entry.revocation_date_utc == T0 + DAY
    renewed = tj_store.trust_store(["TJ"], crl_grace=DAY)
    with pytest.raises(VerificationError) as revoked:
        renewed.verify_signer([old], at=T0 + 2 * DAY, revocation_at=due + 2 * DAY)
    assert revoked.value.reason is Reason.CERT_REVOKED


def test_revoke_without_serial_revokes_every_certificate(tj_store: KeyStore) -> None:
    old = tj_store.issue("TJ-MOL", "TJ", now=T0)
    new = tj_store.rotate("TJ-MOL", now=T0 + DAY)
    revoked = tj_store.revoke("TJ-MOL", now=T0 + 2 * DAY)
    assert sorted(revoked) == sorted([old.serial_number, new.serial_number])
    with pytest.raises(ConfigError) as caught:
        tj_store.signer("TJ-MOL", at=T0 + 3 * DAY)
    assert caught.value.reason is Reason.KEY_MISSING


def test_revoke_unknown_serial_is_refused(tj_store: KeyStore) -> None:
    tj_store.issue("TJ-MOL", "TJ", now=T0)
    with pytest.raises(ConfigError) as caught:
        tj_store.revoke("TJ-MOL", 12345, now=T0)
    assert caught.value.reason is Reason.KEY_MISSING


def test_signer_without_its_private_key_is_key_missing(tj_store: KeyStore) -> None:
    cert = tj_store.issue("TJ-MOL", "TJ", now=T0)
    key_path = tj_store.root / "TJ" / "authorities" / "TJ-MOL" / "private" / f"{cert.serial_number:x}.key.pem"
    key_path.unlink()
    with pytest.raises(ConfigError) as caught:
        tj_store.signer("TJ-MOL", at=T0 + DAY)
    assert caught.value.reason is Reason.KEY_MISSING


def test_ca_rotation_keeps_old_certificates_verifying(tj_store: KeyStore) -> None:
    old_leaf = tj_store.issue("TJ-MOL", "TJ", now=T0)
    tj_store.rotate_ca("TJ", now=T0 + 100 * DAY)
    new_leaf = tj_store.rotate("TJ-MOL", now=T0 + 101 * DAY)
    trust = tj_store.trust_store(["TJ"])
    at = T0 + 102 * DAY
    assert len(trust.anchors("TJ")) == 2
    assert trust.verify_signer([old_leaf], at=at).authority_id == "TJ-MOL"
    chain = tj_store.signer("TJ-MOL", at=at).chain
    assert chain[0] == new_leaf
    assert trust.verify_signer(chain, at=at).authority_id == "TJ-MOL"
    assert chain[1] == trust.anchors("TJ")[1]


def test_bundle_round_trip_lets_the_peer_verify_and_see_revocations(tmp_path: Path) -> None:
    tajik = KeyStore(root=tmp_path / "tj")
    russian = KeyStore(root=tmp_path / "ru")
    tajik.init_country("TJ", now=T0)
    russian.init_country("RU", now=T0)
    mol = tajik.issue("TJ-MOL", "TJ", now=T0)
    tajik.revoke("TJ-MOL", mol.serial_number, now=T0 + 5 * DAY)

    bundle = tajik.export_bundle("TJ")
    assert b"PRIVATE KEY" not in bundle
    russian.import_bundle("TJ", bundle)
    assert (tmp_path / "ru" / "peers" / "TJ" / "ca-1.cert.pem").is_file()

    trust = russian.trust_store(["RU", "TJ"])
    assert trust.verify_signer([mol], at=T0 + DAY).country == "TJ"
    with pytest.raises(VerificationError) as caught:
        trust.verify_signer([mol], at=T0 + 6 * DAY)
    assert caught.value.reason is Reason.CERT_REVOKED


def test_import_refuses_private_keys_bad_crls_and_our_own_country(tmp_path: Path) -> None:
    tajik = KeyStore(root=tmp_path / "tj")
    tajik.init_country("TJ", now=T0)
    russian = KeyStore(root=tmp_path / "ru")
    russian.init_country("RU", now=T0)
    bundle = tajik.export_bundle("TJ")
    key_pem = (tmp_path / "tj" / "TJ" / "ca" / "private" / "ca-1.key.pem").read_bytes()
    with pytest.raises(ConfigError, match="PRIVATE KEY"):
        russian.import_bundle("TJ", bundle + key_pem)
    # a CRL signed by Russia's CA does not belong in Tajikistan's bundle
    foreign_crl = (tmp_path / "ru" / "RU" / "crl.pem").read_bytes()
    with pytest.raises(ConfigError, match="CRL is not signed"):
        russian.import_bundle("TJ", bundle.split(b"-----BEGIN X509 CRL")[0] + foreign_crl)
    with pytest.raises(ConfigError, match="no CA certificate"):
        russian.import_bundle("TJ", b"not a bundle")
    with pytest.raises(ConfigError, match="TJ's, not RU's"):
        russian.import_bundle("RU", tajik.export_bundle("TJ"))
    with pytest.raises(ConfigError, match="our own country"):
        russian.import_bundle(None, russian.export_bundle("RU"))
    assert not (tmp_path / "ru" / "peers" / "TJ").exists()


def test_trust_store_for_an_unknown_country_is_key_missing(tj_store: KeyStore) -> None:
    with pytest.raises(ConfigError) as caught:
        tj_store.trust_store(["TJ", "RU"])
    assert caught.value.reason is Reason.KEY_MISSING


def test_corrupt_certificate_file_is_config_invalid(tj_store: KeyStore) -> None:
    (tj_store.root / "TJ" / "ca" / "ca-1.cert.pem").write_bytes(b"garbage")
    with pytest.raises(ConfigError) as caught:
        tj_store.trust_store(["TJ"])
    assert caught.value.reason is Reason.CONFIG_INVALID


def test_inventory_lists_cas_authorities_and_peers(tmp_path: Path) -> None:
    tajik = KeyStore(root=tmp_path / "tj")
    tajik.init_country("TJ", now=T0)
    russian = KeyStore(root=tmp_path / "ru")
    russian.init_country("RU", now=T0)
    cert = russian.issue("RU-MVD", "RU", now=T0)
    russian.revoke("RU-MVD", now=T0 + DAY)
    russian.import_bundle("TJ", tajik.export_bundle("TJ"))
    records = {(record.country, record.kind, record.holder): record for record in russian.inventory()}
    assert set(records) == {
        ("RU", "ca", "RU Labour Exchange CA"),
        ("RU", "authority", "RU-MVD"),
        ("TJ", "peer-ca", "TJ Labour Exchange CA"),
    }
    mvd = records["RU", "authority", "RU-MVD"]
    assert mvd.serial == cert.serial_number
    assert mvd.revoked_at == T0 + DAY
    assert mvd.has_private_key
    assert not records["TJ", "peer-ca", "TJ Labour Exchange CA"].has_private_key


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_init_issue_rotate_revoke_export_import_list(tmp_path: Path) -> None:
    runner = CliRunner()
    tj_root = str(tmp_path / "tj")
    ru_root = str(tmp_path / "ru")

    def run(*args: str) -> str:
        result = runner.invoke(keys_app, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    run("init", "--country", "TJ", "--root", tj_root)
    run("init", "--country", "RU", "--root", ru_root)
    run("issue", "--authority", "TJ-MOL", "--country", "TJ", "--root", tj_root, "--display-name", "MoL")
    assert "new signing certificate" in run("rotate", "--authority", "TJ-MOL", "--root", tj_root)
    serials = sorted(KeyStore(root=Path(tj_root)).inventory(), key=lambda record: record.not_before)
    first = next(record for record in serials if record.kind == "authority").serial
    assert f"{first:x}" in run("revoke", "--authority", "TJ-MOL", "--serial", f"{first:x}", "--root", tj_root)

    bundle_path = tmp_path / "tj-bundle.pem"
    run("export", "--country", "TJ", "--root", tj_root, "--out", str(bundle_path))
    assert "BEGIN CERTIFICATE" in run("export", "--country", "TJ", "--root", tj_root)
    run("import", "--country", "TJ", str(bundle_path), "--root", ru_root)

    trust = KeyStore(root=Path(ru_root)).trust_store(["TJ"])
    assert trust.crls("TJ")[0].get_revoked_certificate_by_serial_number(first) is not None

    refreshed = run("refresh-crl", "--country", "TJ", "--root", tj_root)
    assert "TJ CRL re-issued, next update" in refreshed
    reissued = KeyStore(root=Path(tj_root)).current_crl("TJ")
    assert reissued is not None
    assert reissued.get_revoked_certificate_by_serial_number(first) is not None

    listing = run("list", "--root", tj_root)
    assert "TJ-MOL" in listing
    assert "TJ Labour Exchange CA" in listing
    assert f"{first:x}" in listing


def test_cli_reports_errors_with_their_reason_and_a_nonzero_exit(tmp_path: Path) -> None:
    runner = CliRunner()
    root = str(tmp_path / "keys")
    result = runner.invoke(keys_app, ["issue", "--authority", "TJ-MOL", "--country", "TJ", "--root", root])
    assert result.exit_code == 1
    assert "key.missing" in result.output
    result = runner.invoke(keys_app, ["revoke", "--authority", "TJ-MOL", "--serial", "xyz", "--root", root])
    assert result.exit_code == 2
