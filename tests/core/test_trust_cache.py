"""The issuer check is remembered per certificate; everything time-dependent is checked every time."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from broker.core.errors import Reason, VerificationError
from broker.core.trust import TrustStore
from broker.state.keystore import KeyStore


def test_a_remembered_certificate_still_expires(
    dev_pki: KeyStore, trust: TrustStore, pki_now: datetime
) -> None:
    chain = dev_pki.signer("RU-MVD", at=pki_now + timedelta(days=1)).chain
    assert trust.verify_signer(chain, at=pki_now + timedelta(days=1)).authority_id == "RU-MVD"
    with pytest.raises(VerificationError) as expired:
        trust.verify_signer(chain, at=chain[0].not_valid_after_utc + timedelta(seconds=1))
    assert expired.value.reason is Reason.CERT_EXPIRED


def test_a_remembered_certificate_is_still_revoked(tmp_path: Path, pki_now: datetime) -> None:
    store = KeyStore(root=tmp_path)
    store.init_country("RU", now=pki_now)
    store.issue("RU-MVD", "RU", now=pki_now)
    chain = store.signer("RU-MVD", at=pki_now + timedelta(days=1)).chain
    store.revoke("RU-MVD", now=pki_now + timedelta(days=3))
    trust = store.trust_store(["RU"])
    # Remembered while valid (a message from before the revocation), then judged again after it.
    assert trust.verify_signer(chain, at=pki_now + timedelta(days=2)).authority_id == "RU-MVD"
    with pytest.raises(VerificationError) as revoked:
        trust.verify_signer(chain, at=pki_now + timedelta(days=4))
    assert revoked.value.reason is Reason.CERT_REVOKED


def test_a_remembered_key_agreement_certificate_still_expires(tmp_path: Path, pki_now: datetime) -> None:
    store = KeyStore(root=tmp_path)
    store.init_country("RU", now=pki_now)
    store.issue("RU-MVD", "RU", now=pki_now)
    cert = store.issue_encryption("RU-MVD", now=pki_now)
    trust = store.trust_store(["RU"])
    at = pki_now + timedelta(days=1)
    assert trust.verify_key_agreement(cert, at=at).authority_id == "RU-MVD"
    with pytest.raises(VerificationError) as expired:
        trust.verify_key_agreement(cert, at=cert.not_valid_after_utc + timedelta(seconds=1))
    assert expired.value.reason is Reason.CERT_EXPIRED


def test_a_signing_certificate_is_never_remembered_as_a_key_agreement_one(
    dev_pki: KeyStore, trust: TrustStore, pki_now: datetime
) -> None:
    at = pki_now + timedelta(days=1)
    chain = dev_pki.signer("RU-MVD", at=at).chain
    trust.verify_signer(chain, at=at)  # remembered for signing ...
    for _ in range(2):  # ... and refused for key agreement every time
        with pytest.raises(VerificationError) as caught:
            trust.verify_key_agreement(chain[0], at=at)
        assert caught.value.reason is Reason.CERT_USAGE
