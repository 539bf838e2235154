"""Every way a signer chain can fail, each with its own reason code, and the ways it must pass."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtensionOID, NameOID

from broker.core.errors import ConfigError, Reason, VerificationError
from broker.core.pki import build_crl, create_ca, issue_authority_certificate
from broker.core.trust import TrustStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
YEAR = timedelta(days=365)
INSIDE = T0 + 30 * DAY  # a moment inside every default validity period below


@dataclass(frozen=True)
class Authority:
    key: Ed25519PrivateKey
    cert: x509.Certificate


@dataclass(frozen=True)
class Ca:
    country: str
    key: Ed25519PrivateKey
    cert: x509.Certificate

    def issue(
        self, authority_id: str, *, not_before: datetime = T0, not_after: datetime = T0 + YEAR
    ) -> Authority:
        key = Ed25519PrivateKey.generate()
        cert = issue_authority_certificate(
            ca_key=self.key,
            ca_cert=self.cert,
            authority_id=authority_id,
            country=self.country,
            public_key=key.public_key(),
            not_before=not_before,
            not_after=not_after,
        )
        return Authority(key=key, cert=cert)

    def crl(self, revoked: list[tuple[int, datetime]]) -> x509.CertificateRevocationList:
        return build_crl(
            ca_key=self.key,
            ca_cert=self.cert,
            revoked=revoked,
            this_update=INSIDE,
            next_update=INSIDE + 7 * DAY,
        )


def make_ca(country: str, *, not_before: datetime = T0, not_after: datetime = T0 + 10 * YEAR) -> Ca:
    key, cert = create_ca(country=country, not_before=not_before, not_after=not_after)
    return Ca(country=country, key=key, cert=cert)


@pytest.fixture
def tj() -> Ca:
    return make_ca("TJ")


@pytest.fixture
def ru() -> Ca:
    return make_ca("RU")


@pytest.fixture
def store(tj: Ca, ru: Ca) -> TrustStore:
    return TrustStore(anchors={"TJ": [tj.cert], "RU": [ru.cert]})


def _hand_built_leaf(
    ca: Ca,
    *,
    public_key: Ed25519PublicKey | ec.EllipticCurvePublicKey | None = None,
    common_name: str = "TJ-MOL",
    country: str = "TJ",
    key_usage: x509.KeyUsage | None = None,
    ca_flag: bool = False,
) -> x509.Certificate:
    """A certificate our own CA key signed but pki.issue_authority_certificate would never build."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COUNTRY_NAME, country),
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                ]
            )
        )
        .issuer_name(ca.cert.subject)
        .public_key(public_key or Ed25519PrivateKey.generate().public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0)
        .not_valid_after(T0 + YEAR)
        .add_extension(x509.BasicConstraints(ca=ca_flag, path_length=None), critical=True)
    )
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    return builder.sign(private_key=ca.key, algorithm=None)


def _usage(*, digital_signature: bool = False, key_agreement: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=key_agreement,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _reason(store: TrustStore, chain: list[x509.Certificate], at: datetime = INSIDE) -> Reason:
    with pytest.raises(VerificationError) as caught:
        store.verify_signer(chain, at=at)
    return caught.value.reason


# --- passing ----------------------------------------------------------------------------------------


def test_valid_chain_names_the_authority_and_its_country(store: TrustStore, tj: Ca, ru: Ca) -> None:
    mol = tj.issue("TJ-MOL")
    identity = store.verify_signer([mol.cert, tj.cert], at=INSIDE)
    assert identity.authority_id == "TJ-MOL"
    assert identity.country == "TJ"
    assert identity.certificate == mol.cert
    assert store.verify_signer([ru.issue("RU-MVD").cert], at=INSIDE).country == "RU"


def test_validity_bounds_are_inclusive(store: TrustStore, tj: Ca) -> None:
    gw = tj.issue("TJ-GW")
    assert store.verify_signer([gw.cert], at=T0).authority_id == "TJ-GW"
    assert store.verify_signer([gw.cert], at=T0 + YEAR).authority_id == "TJ-GW"


def test_rotation_overlap_both_certificates_verify(store: TrustStore, tj: Ca) -> None:
    old = tj.issue("TJ-MOL", not_before=T0, not_after=T0 + YEAR)
    new = tj.issue("TJ-MOL", not_before=T0 + 300 * DAY, not_after=T0 + 2 * YEAR)
    overlap = T0 + 330 * DAY
    assert store.verify_signer([old.cert, tj.cert], at=overlap).authority_id == "TJ-MOL"
    assert store.verify_signer([new.cert, tj.cert], at=overlap).authority_id == "TJ-MOL"
    assert _reason(store, [old.cert], at=T0 + 400 * DAY) is Reason.CERT_EXPIRED
    assert _reason(store, [new.cert], at=T0 + 100 * DAY) is Reason.CERT_NOT_YET_VALID


def test_ca_rotation_keeps_both_generations_as_anchors(tj: Ca) -> None:
    successor = make_ca("TJ", not_before=T0 + YEAR, not_after=T0 + 11 * YEAR)
    store = TrustStore(anchors={"TJ": [tj.cert, successor.cert]})
    old_leaf = tj.issue("TJ-MOL")
    new_leaf = successor.issue("TJ-MOL", not_before=T0 + YEAR, not_after=T0 + 2 * YEAR)
    assert store.verify_signer([old_leaf.cert], at=INSIDE).authority_id == "TJ-MOL"
    assert store.verify_signer([new_leaf.cert], at=T0 + YEAR + DAY).authority_id == "TJ-MOL"


# --- trust --------------------------------------------------------------------------------------------


def test_leaf_from_a_ca_we_do_not_trust_is_untrusted(tj: Ca) -> None:
    only_tj = TrustStore(anchors={"TJ": [tj.cert]})
    ru_leaf = make_ca("RU").issue("RU-MVD")
    assert _reason(only_tj, [ru_leaf.cert]) is Reason.CERT_UNTRUSTED


def test_attacker_ca_with_our_ca_name_and_its_cert_in_the_chain_is_untrusted(store: TrustStore) -> None:
    attacker = make_ca("TJ")  # same subject "TJ Labour Exchange CA", different key
    forged = attacker.issue("TJ-MOL")
    assert _reason(store, [forged.cert, attacker.cert]) is Reason.CERT_UNTRUSTED


def test_self_signed_leaf_is_untrusted(store: TrustStore) -> None:
    key = Ed25519PrivateKey.generate()
    name = x509.Name(
        [x509.NameAttribute(NameOID.COUNTRY_NAME, "TJ"), x509.NameAttribute(NameOID.COMMON_NAME, "TJ-MOL")]
    )
    self_signed = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(T0)
        .not_valid_after(T0 + YEAR)
        .sign(private_key=key, algorithm=None)
    )
    assert _reason(store, [self_signed]) is Reason.CERT_UNTRUSTED


def test_empty_chain_is_malformed(store: TrustStore) -> None:
    assert _reason(store, []) is Reason.CERT_MALFORMED


# --- time ---------------------------------------------------------------------------------------------


def test_expired_and_not_yet_valid_leaf(store: TrustStore, tj: Ca) -> None:
    mol = tj.issue("TJ-MOL", not_before=T0 + DAY, not_after=T0 + 10 * DAY)
    assert _reason(store, [mol.cert], at=T0) is Reason.CERT_NOT_YET_VALID
    assert _reason(store, [mol.cert], at=T0 + 10 * DAY + timedelta(seconds=1)) is Reason.CERT_EXPIRED


def test_expired_ca_fails_even_when_the_leaf_is_still_valid() -> None:
    short_ca = make_ca("TJ", not_before=T0, not_after=T0 + 10 * DAY)
    store = TrustStore(anchors={"TJ": [short_ca.cert]})
    leaf = short_ca.issue("TJ-MOL", not_after=T0 + YEAR)
    assert _reason(store, [leaf.cert], at=T0 + 20 * DAY) is Reason.CERT_EXPIRED


def test_verification_time_must_carry_a_time_zone(store: TrustStore, tj: Ca) -> None:
    with pytest.raises(ConfigError):
        store.verify_signer([tj.issue("TJ-MOL").cert], at=datetime(2026, 2, 1))


# --- usage and names ------------------------------------------------------------------------------


def test_ca_certificate_used_as_a_signer_is_refused(store: TrustStore, tj: Ca) -> None:
    # The CA is self-issued by a trusted anchor, so only the usage check can stop it.
    assert _reason(store, [tj.cert]) is Reason.CERT_USAGE


def test_leaf_flagged_as_ca_is_refused(store: TrustStore, tj: Ca) -> None:
    leaf = _hand_built_leaf(tj, ca_flag=True, key_usage=_usage(digital_signature=True))
    assert _reason(store, [leaf]) is Reason.CERT_USAGE


def test_leaf_without_signing_usage_is_refused(store: TrustStore, tj: Ca) -> None:
    assert _reason(store, [_hand_built_leaf(tj, key_usage=_usage(key_agreement=True))]) is Reason.CERT_USAGE
    assert _reason(store, [_hand_built_leaf(tj, key_usage=None)]) is Reason.CERT_USAGE


def test_wrong_key_type_is_refused(store: TrustStore, tj: Ca) -> None:
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    leaf = _hand_built_leaf(tj, public_key=p256, key_usage=_usage(digital_signature=True))
    assert _reason(store, [leaf]) is Reason.CERT_USAGE


def test_leaf_country_must_be_the_ca_country(store: TrustStore, tj: Ca) -> None:
    leaf = _hand_built_leaf(tj, country="RU", key_usage=_usage(digital_signature=True))
    assert _reason(store, [leaf]) is Reason.CERT_AUTHORITY_MISMATCH


def test_a_ca_cannot_name_another_countrys_authority(store: TrustStore, ru: Ca) -> None:
    forged = _hand_built_leaf(
        ru, common_name="TJ-MOL", country="RU", key_usage=_usage(digital_signature=True)
    )
    assert _reason(store, [forged]) is Reason.CERT_AUTHORITY_MISMATCH


def test_subject_that_is_not_an_authority_id_is_malformed(store: TrustStore, tj: Ca) -> None:
    leaf = _hand_built_leaf(tj, common_name="Ministry", key_usage=_usage(digital_signature=True))
    assert _reason(store, [leaf]) is Reason.CERT_MALFORMED


# --- revocation ---------------------------------------------------------------------------------


def test_revoked_after_the_revocation_time_and_valid_before_it(store: TrustStore, tj: Ca) -> None:
    mol = tj.issue("TJ-MOL")
    revoked_at = T0 + 20 * DAY
    revoking = store.with_crl("TJ", tj.crl([(mol.cert.serial_number, revoked_at)]))
    assert _reason(revoking, [mol.cert], at=revoked_at) is Reason.CERT_REVOKED
    assert _reason(revoking, [mol.cert], at=revoked_at + DAY) is Reason.CERT_REVOKED
    # An auditor replaying a message signed before the revocation still sees it verify.
    assert revoking.verify_signer([mol.cert], at=revoked_at - DAY).authority_id == "TJ-MOL"
    # The original store is unchanged: with_crl returns a new one.
    assert store.verify_signer([mol.cert], at=revoked_at + DAY).authority_id == "TJ-MOL"


def test_crl_of_one_country_does_not_revoke_another(store: TrustStore, tj: Ca, ru: Ca) -> None:
    mvd = ru.issue("RU-MVD")
    revoking = store.with_crl("TJ", tj.crl([(mvd.cert.serial_number, T0)]))
    assert revoking.verify_signer([mvd.cert], at=INSIDE).authority_id == "RU-MVD"


def test_crls_passed_to_the_constructor_are_honoured(tj: Ca) -> None:
    mol = tj.issue("TJ-MOL")
    store = TrustStore(anchors={"TJ": [tj.cert]}, crls={"TJ": [tj.crl([(mol.cert.serial_number, T0)])]})
    assert _reason(store, [mol.cert]) is Reason.CERT_REVOKED


def test_crl_signed_by_a_wrong_key_is_refused(store: TrustStore, tj: Ca, ru: Ca) -> None:
    attacker = make_ca("TJ")  # same issuer name as the real TJ CA
    with pytest.raises(VerificationError) as caught:
        store.with_crl("TJ", attacker.crl([(1, T0)]))
    assert caught.value.reason is Reason.CERT_UNTRUSTED
    with pytest.raises(VerificationError):
        store.with_crl("TJ", ru.crl([(1, T0)]))  # a real CA, but of the other country
    with pytest.raises(VerificationError):
        TrustStore(anchors={"TJ": [tj.cert]}, crls={"TJ": [attacker.crl([])]})
    with pytest.raises(VerificationError):
        store.with_crl("UZ", tj.crl([]))  # no anchor at all


# --- anchors ----------------------------------------------------------------------------------------


def test_anchor_must_be_a_ca_of_the_country_it_is_filed_under(tj: Ca) -> None:
    with pytest.raises(ConfigError):
        TrustStore(anchors={"RU": [tj.cert]})
    with pytest.raises(ConfigError):
        TrustStore(anchors={"TJ": [tj.issue("TJ-MOL").cert]})


def test_store_reports_its_material(store: TrustStore, tj: Ca) -> None:
    assert store.countries == frozenset({"TJ", "RU"})
    assert store.anchors("TJ") == (tj.cert,)
    assert store.anchors("UZ") == ()
    crl = tj.crl([])
    assert store.with_crl("TJ", crl).crls("TJ") == (crl,)


def test_unparseable_extension_is_malformed_not_a_crash(store: TrustStore, tj: Ca) -> None:
    garbage_key_usage = x509.UnrecognizedExtension(ExtensionOID.KEY_USAGE, b"\x04\x02junk")
    leaf = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COUNTRY_NAME, "TJ"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "TJ-MOL"),
                ]
            )
        )
        .issuer_name(tj.cert.subject)
        .public_key(Ed25519PrivateKey.generate().public_key())
        .serial_number(7)
        .not_valid_before(T0)
        .not_valid_after(T0 + YEAR)
        .add_extension(garbage_key_usage, critical=True)
        .sign(private_key=tj.key, algorithm=None)
    )
    assert _reason(store, [leaf]) is Reason.CERT_MALFORMED


# --- a CRL past its nextUpdate ----------------------------------------------------------------
class TestStaleCrl:
    """The newest CRL of the signer's country is due at INSIDE + 7 days (Ca.crl); grace of 2 days."""

    GRACE = 2 * DAY
    DUE = INSIDE + 7 * DAY

    def _store(self, tj: Ca, ru: Ca) -> tuple[TrustStore, Authority]:
        mol = tj.issue("TJ-MOL")
        trust = TrustStore(
            anchors={"TJ": [tj.cert], "RU": [ru.cert]}, crls={"TJ": [tj.crl([])]}, crl_grace=self.GRACE
        )
        return trust, mol

    def test_current_until_its_next_update(self, tj: Ca, ru: Ca) -> None:
        trust, mol = self._store(tj, ru)
        assert trust.verify_signer([mol.cert], at=INSIDE, revocation_at=self.DUE).crl_stale_since is None

    def test_flagged_within_the_grace_period(self, tj: Ca, ru: Ca) -> None:
        trust, mol = self._store(tj, ru)
        identity = trust.verify_signer([mol.cert], at=INSIDE, revocation_at=self.DUE + DAY)
        assert (identity.authority_id, identity.crl_stale_since) == ("TJ-MOL", self.DUE)

    def test_refused_after_the_grace_period(self, tj: Ca, ru: Ca) -> None:
        trust, mol = self._store(tj, ru)
        with pytest.raises(VerificationError) as caught:
            trust.verify_signer([mol.cert], at=INSIDE, revocation_at=self.DUE + self.GRACE + DAY)
        assert caught.value.reason is Reason.CRL_STALE
        assert self.DUE.isoformat() in caught.value.diagnostic

    def test_a_trust_update_may_pass_flagged_since_it_brings_the_fresh_crl(self, tj: Ca, ru: Ca) -> None:
        trust, mol = self._store(tj, ru)
        late = self.DUE + 30 * DAY
        identity = trust.verify_signer([mol.cert], at=INSIDE, revocation_at=late, stale_crl_ok=True)
        assert identity.crl_stale_since == self.DUE

    def test_a_newer_crl_makes_it_current_again_and_keeps_the_grace(self, tj: Ca, ru: Ca) -> None:
        trust, mol = self._store(tj, ru)
        late = self.DUE + 30 * DAY
        fresh = build_crl(
            ca_key=tj.key, ca_cert=tj.cert, revoked=[], this_update=late, next_update=late + 7 * DAY
        )
        renewed = trust.with_crl("TJ", fresh)
        assert renewed.verify_signer([mol.cert], at=INSIDE, revocation_at=late).crl_stale_since is None
        assert renewed.crl_grace == self.GRACE
        with pytest.raises(VerificationError) as caught:
            renewed.verify_signer([mol.cert], at=INSIDE, revocation_at=late + 10 * DAY)
        assert caught.value.reason is Reason.CRL_STALE

    def test_an_auditor_judging_at_the_message_time_is_not_refused(self, tj: Ca, ru: Ca) -> None:
        # Replaying a log is not a live decision: the CRLs held now are what the auditor has.
        trust, mol = self._store(tj, ru)
        assert trust.verify_signer([mol.cert], at=self.DUE + 30 * DAY).crl_stale_since is None

    def test_a_country_without_any_crl_has_nothing_to_go_stale(self, tj: Ca, ru: Ca) -> None:
        trust, _ = self._store(tj, ru)
        mvd = ru.issue("RU-MVD")
        late = self.DUE + 30 * DAY
        assert trust.verify_signer([mvd.cert], at=INSIDE, revocation_at=late).crl_stale_since is None
