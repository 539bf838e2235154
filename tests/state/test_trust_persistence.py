"""A trust update received over the channel survives a restart of the gateway that applied it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from broker.audit.entry import EntryKind
from broker.audit.stores.sqlite import SqliteAuditStore
from broker.core.agreement import Agreement
from broker.core.errors import Reason, VerificationError
from broker.core.sealing import seal
from broker.core.trust_update import EncryptionDirectory, TrustChange, apply_trust_update, build_trust_update
from broker.exchange.topology import INBOUND
from broker.state.keystore import KeyStore
from tests.support.audit_run import FakeClock, Side, build_side

T0_OFFSET = timedelta(hours=1)


class Countries:
    """Two key stores as two countries keep them: each its own CA, the other's imported as a peer."""

    def __init__(self, root: Path, now: datetime) -> None:
        self.now = now
        self.ru = KeyStore(root=root / "ru-keys")
        self.tj = KeyStore(root=root / "tj-keys")
        for store, country in ((self.ru, "RU"), (self.tj, "TJ")):
            store.init_country(country, now=now)
        for authority in ("RU-MINTRUD", "RU-CA", "RU-GW"):
            self.ru.issue(authority, "RU", now=now)
        for authority in ("TJ-MOL", "TJ-GW"):
            self.tj.issue(authority, "TJ", now=now)
        self.tj.import_bundle("RU", self.ru.export_bundle("RU"))
        self.ru.import_bundle("TJ", self.tj.export_bundle("TJ"))


@pytest.fixture
def countries(tmp_path: Path, pki_now: datetime) -> Countries:
    return Countries(tmp_path, pki_now)


def _revoke_and_update(countries: Countries) -> tuple[list[x509.Certificate], TrustChange]:
    """RU revokes RU-MINTRUD; TJ applies the CRL from a trust update (as its gateway would)."""
    chain = countries.ru.signer("RU-MINTRUD", at=countries.now + T0_OFFSET).chain
    countries.ru.revoke("RU-MINTRUD", now=countries.now + 2 * T0_OFFSET)
    crl = countries.ru.current_crl("RU")
    assert crl is not None
    change = apply_trust_update(
        build_trust_update("RU", crl=crl),
        signer_country="RU",
        trust=countries.tj.trust_store(["RU", "TJ"]),
        directory=EncryptionDirectory(),
        at=countries.now + 3 * T0_OFFSET,
    )
    return list(chain), change


def test_a_remembered_crl_still_revokes_after_the_key_store_is_read_again(countries: Countries) -> None:
    chain, change = _revoke_and_update(countries)
    before = countries.tj.trust_store(["RU"])
    later = countries.now + 4 * T0_OFFSET
    before.verify_signer(chain, at=later)  # not yet kept: still trusted
    assert countries.tj.remember_peer_trust("RU", change.trust) is True
    reread = KeyStore(root=countries.tj.root).trust_store(["RU"])
    with pytest.raises(VerificationError) as caught:
        reread.verify_signer(chain, at=later)
    assert caught.value.reason is Reason.CERT_REVOKED


def test_new_key_agreement_certificates_are_kept_and_our_own_country_is_never_overwritten(
    countries: Countries,
) -> None:
    cert = countries.ru.issue_encryption("RU-MINTRUD", now=countries.now)
    trust = countries.tj.trust_store(["RU"])
    assert countries.tj.remember_peer_trust("RU", trust, key_agreement=[cert]) is True
    assert countries.tj.encryption_certificates("RU-MINTRUD") == [cert]
    assert countries.tj.remember_peer_trust("TJ", countries.tj.trust_store(["TJ"])) is False


@pytest.fixture
async def tajik_gateway(
    tmp_path: Path, countries: Countries, agreement: Agreement
) -> AsyncIterator[tuple[Side, list[str]]]:
    """TJ's gateway over the in-memory broker, keeping trust updates in its own key store; the
    first attempt to keep one fails as a full disk would."""
    attempts: list[str] = []

    def remember(country: str, change: TrustChange) -> bool:
        attempts.append(country)
        if len(attempts) == 1:
            raise OSError(28, "No space left on device")
        return countries.tj.remember_peer_trust(country, change.trust, key_agreement=change.key_agreement)

    start = countries.now + 3 * T0_OFFSET
    store = await SqliteAuditStore.open(tmp_path / "tj.sqlite")
    side = await build_side(
        "TJ", store=store, state_dir=tmp_path / "tj", keys=countries.tj, agreement=agreement,
        trust=countries.tj.trust_store(["RU", "TJ"]), clock=FakeClock(start), at=start, remember_trust=remember,
    )  # fmt: skip
    await side.gateway.start()
    try:
        yield side, attempts
    finally:
        await side.gateway.stop()
        await side.transport.close()
        side.gateway.outbox.close()
        await store.close()


async def test_the_gateway_keeps_a_crl_before_logging_it_applied_and_holds_it_while_it_cannot(
    countries: Countries, tajik_gateway: tuple[Side, list[str]]
) -> None:
    side, attempts = tajik_gateway
    chain, _ = _revoke_and_update(countries)
    crl = countries.ru.current_crl("RU")
    assert crl is not None
    at = countries.now + 3 * T0_OFFSET
    sealed = seal(
        build_trust_update("RU", crl=crl),
        sender="RU-CA",
        recipient="TJ-GW",
        signer=countries.ru.signer("RU-CA", at=at),
        created_at=at,
    )
    await side.transport.publish(
        exchange=INBOUND, routing_key="tj", body=sealed.raw, message_id=str(sealed.envelope.id)
    )
    for _ in range(200):
        applied = await side.store.find(sealed.envelope.id, kinds=[EntryKind.TRUST_UPDATE])
        if applied:
            break
        await asyncio.sleep(0.05)
    assert [entry.kind for entry in applied] == [EntryKind.TRUST_UPDATE]
    assert attempts == ["RU", "RU"]  # the failed write held the message; the retry kept it
    reread = KeyStore(root=countries.tj.root).trust_store(["RU"])  # what a restarted gateway loads
    with pytest.raises(VerificationError) as caught:
        reread.verify_signer(chain, at=at + T0_OFFSET)
    assert caught.value.reason is Reason.CERT_REVOKED
