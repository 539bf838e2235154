"""A live gateway judges revocation when a message arrives; an auditor judges it at the message time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.core.agreement import Agreement
from broker.core.catalogue import sample_payloads
from broker.core.errors import Reason, VerificationError
from broker.core.sealing import open_message, seal
from broker.state.keystore import KeyStore

T0 = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.fixture
def keystore(tmp_path: Path, agreement: Agreement) -> KeyStore:
    store = KeyStore(root=tmp_path)
    for country in agreement.countries:
        store.init_country(country, now=T0 - timedelta(days=30))
    store.issue("RU-MVD", "RU", now=T0 - timedelta(days=30))
    for country in agreement.countries:
        store.issue(agreement.gateway(country).id, country, now=T0 - timedelta(days=30))
    store.issue("TJ-MOL", "TJ", now=T0 - timedelta(days=30))
    return store


def test_backdated_message_from_revoked_key_is_refused_on_arrival(
    keystore: KeyStore, agreement: Agreement
) -> None:
    signer = keystore.signer("RU-MVD", at=T0)
    revoked_at = T0 + timedelta(hours=1)
    keystore.revoke("RU-MVD", now=revoked_at)
    trust = keystore.trust_store(agreement.countries)
    # Dated before the revocation, as a thief holding the old key would date it.
    sealed = seal(
        sample_payloads()["worker.death"], sender="RU-MVD", recipient="TJ-MOL", signer=signer, created_at=T0
    )

    with pytest.raises(VerificationError) as refused:
        open_message(
            sealed.raw, trust=trust, agreement=agreement, received_at=revoked_at + timedelta(minutes=5)
        )
    assert refused.value.reason is Reason.CERT_REVOKED

    # The auditor replaying the log judges at the message time, so the same bytes still verify.
    opened = open_message(sealed.raw, trust=trust, agreement=agreement)
    assert opened.envelope.sender == "RU-MVD"


def test_message_arriving_before_revocation_is_accepted(keystore: KeyStore, agreement: Agreement) -> None:
    signer = keystore.signer("RU-MVD", at=T0)
    keystore.revoke("RU-MVD", now=T0 + timedelta(hours=1))
    trust = keystore.trust_store(agreement.countries)
    sealed = seal(
        sample_payloads()["worker.death"], sender="RU-MVD", recipient="TJ-MOL", signer=signer, created_at=T0
    )
    opened = open_message(sealed.raw, trust=trust, agreement=agreement, received_at=T0 + timedelta(minutes=1))
    assert opened.sha256 == sealed.sha256
