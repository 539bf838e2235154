"""Key changes reach running gateways without a restart; a message we cannot open for want of our own
key is held, never refused. Over the real RabbitMQ, with each country's folder as `broker init` makes
it (own key store, the peer's bundle imported), on the session's vhosts."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from broker.audit import EntryKind
from broker.core.catalogue import sample_payloads
from broker.core.catalogue.death import WorkerDeath
from broker.core.catalogue.receipt import Verdict
from broker.core.errors import Reason
from broker.core.personal import SEALED_KEY_HEADER, WrappedKey, encode_key_header
from broker.core.pki import certificate_thumbprint
from broker.core.sealing import seal
from broker.exchange.gateway import Gateway, gateway_from_settings
from broker.exchange.personal_keys import ReloadingDecryptor
from broker.exchange.subscriber import Subscription
from broker.exchange.topology import INBOUND, QUARANTINE
from broker.state.country_dir import set_up_country
from broker.state.keystore import KeyStore
from broker.state.settings import ExchangeSettings
from tests.support.exchange import ExchangeHarness, wait_until

pytestmark = pytest.mark.rabbitmq

CONSULATE = "TJ-CONSULATE-MOSCOW"
RELOAD_EVERY_S = 0.2


@dataclass
class Countries:
    """TJ and RU as two operators keep them: a folder each, bundles exchanged once."""

    folders: dict[str, Path]
    stores: dict[str, KeyStore]
    settings: dict[str, ExchangeSettings]
    gateways: list[Gateway]

    async def start(self, country: str) -> Gateway:
        gateway = await gateway_from_settings(self.settings[country])
        self.gateways.append(gateway)
        await gateway.start()
        return gateway

    def exchange_bundles(self) -> None:
        self.stores["TJ"].import_bundle("RU", self.stores["RU"].export_bundle("RU"))
        self.stores["RU"].import_bundle("TJ", self.stores["TJ"].export_bundle("TJ"))


@pytest_asyncio.fixture
async def countries(exchange: ExchangeHarness, tmp_path: Path) -> AsyncIterator[Countries]:
    dev = exchange.dev
    secrets = tmp_path / "rabbitmq-secrets.json"
    secrets.write_text(json.dumps(dev.passwords), encoding="utf-8")
    os.chmod(secrets, 0o600)
    folders, stores, settings = {}, {}, {}
    for country in ("TJ", "RU"):
        broker = dev.brokers[country]
        folder = tmp_path / country.lower()
        set_up_country(
            folder,
            country=country,
            agreement=dev.agreement,
            amqp_url=broker.url.replace("amqp://", f"amqp://{broker.gateway_user}@"),
            secrets_file=secrets,
            now=datetime.now(UTC) - timedelta(minutes=1),
        )
        folders[country] = folder
        stores[country] = KeyStore(root=folder / "keys")
        settings[country] = ExchangeSettings.load(
            folder / "gateway.toml", keys_reload_interval_s=RELOAD_EVERY_S, resend_check_interval_s=0.5
        )
    made = Countries(folders=folders, stores=stores, settings=settings, gateways=[])
    made.exchange_bundles()
    try:
        yield made
    finally:
        for gateway in made.gateways:
            await gateway.close()


def _count(gateway: Gateway, metric: str, **labels: str) -> float:
    return gateway.metrics.registry.get_sample_value(metric, labels) or 0.0


async def _reloaded(gateway: Gateway, *, at_least: float = 1) -> None:
    async def done() -> bool:
        return _count(gateway, "exchange_keys_reloaded_total", outcome="changed") >= at_least

    await wait_until(done, what=f"{gateway.gateway_id} to reload its keys")


async def _receipt(gateway: Gateway, message_id: UUID) -> tuple[str, str | None]:
    async def came() -> tuple[str, str | None] | None:
        record = await gateway.outbox.get(message_id)
        if record is None or record.receipt_at is None:
            return None
        return str(record.state), record.reason

    return await wait_until(came, what=f"the receipt of {message_id}", timeout_s=30)


async def test_a_consulate_key_issued_after_the_gateway_started_opens_its_alerts_without_a_restart(
    countries: Countries, exchange: ExchangeHarness
) -> None:
    tajik = countries.stores["TJ"]
    shutil.rmtree(countries.folders["TJ"] / "keys" / "TJ" / "authorities" / CONSULATE / "encryption")
    tj = await countries.start("TJ")
    ru = await countries.start("RU")
    consulate = Subscription(
        transport=exchange.broker["TJ"],
        agreement=tj.agreement,
        trust=tajik.trust_store(tj.agreement.countries),
        authority_id=CONSULATE,
        types=["worker.death"],
        citizenship="TJ",
        decryptor=ReloadingDecryptor(tajik, CONSULATE),
    )
    await consulate.declare()

    with capture_logs() as logs:
        issued = tajik.issue_encryption(CONSULATE, now=datetime.now(UTC) - timedelta(seconds=5))
        await _reloaded(tj)
    [reloaded] = [
        event for event in logs if event["event"] == "keys.reloaded" and event["gateway"] == "TJ-GW"
    ]
    assert f"key-agreement certificate {CONSULATE} {issued.serial_number:x}" in reloaded["added"]

    sent = await ru.send(
        sample_payloads()["worker.death"], to="TJ-MOL", wait_receipt=True, receipt_timeout_s=20
    )
    assert sent.receipt is not None
    assert sent.receipt.verdict == Verdict.ACCEPTED
    [alert] = await consulate.collect(1, timeout_s=20)
    assert alert.message_id == sent.message_id
    assert isinstance(alert.payload, WorkerDeath)


async def test_a_reimported_bundle_with_a_revocation_refuses_the_revoked_key_without_a_restart(
    countries: Countries,
) -> None:
    tj = await countries.start("TJ")
    ru = await countries.start("RU")
    russian = countries.stores["RU"]
    stolen = russian.signer("RU-MVD")

    def signed_by_the_stolen_key() -> Any:
        return seal(
            sample_payloads()["employer.permit"],
            sender="RU-MVD",
            recipient="TJ-MOL",
            signer=stolen,
            created_at=datetime.now(UTC),
        )

    before = signed_by_the_stolen_key()
    await ru.publish_sealed(before)
    assert await _receipt(ru, before.envelope.id) == ("receipted", None)

    await asyncio.sleep(1.1)  # a CRL keeps whole seconds: revoke strictly after the first message
    russian.revoke("RU-MVD", stolen.chain[0].serial_number, now=datetime.now(UTC))
    reloads = _count(tj, "exchange_keys_reloaded_total", outcome="changed")
    countries.stores["TJ"].import_bundle(None, russian.export_bundle("RU"))
    await _reloaded(tj, at_least=reloads + 1)

    after = signed_by_the_stolen_key()
    await ru.publish_sealed(after)
    assert await _receipt(ru, after.envelope.id) == ("rejected", str(Reason.CERT_REVOKED))
    [received] = await tj.audit.find(before.envelope.id, kinds=[EntryKind.RECEIVED])
    assert received.verdict == Verdict.ACCEPTED


async def test_a_key_store_that_does_not_read_is_logged_and_the_keys_held_are_kept(
    countries: Countries,
) -> None:
    tj = await countries.start("TJ")
    ru = await countries.start("RU")
    crl = countries.folders["TJ"] / "keys" / "peers" / "RU" / "crl.pem"
    good = crl.read_bytes()
    with capture_logs() as logs:
        crl.write_bytes(b"-----BEGIN X509 CRL-----\nnot a CRL\n-----END X509 CRL-----\n")

        async def failed() -> bool:
            return _count(tj, "exchange_keys_reloaded_total", outcome="failed") >= 1

        await wait_until(failed, what="the TJ gateway to try the broken key store")
    [failure] = [event for event in logs if event["event"] == "keys.reload_failed"]
    assert failure["reason"] == str(Reason.CONFIG_INVALID)
    assert str(crl) in failure["diagnostic"]

    sent = await ru.send(
        sample_payloads()["worker.death"], to="TJ-MOL", wait_receipt=True, receipt_timeout_s=20
    )
    assert sent.receipt is not None
    assert sent.receipt.verdict == Verdict.ACCEPTED  # the keys loaded before still serve
    crl.write_bytes(good)
    assert await tj.reload_keys() is False  # back to what it held: nothing changed


async def test_a_message_for_a_key_of_ours_we_lost_is_held_until_the_key_is_back_never_refused(
    countries: Countries, exchange: ExchangeHarness, tmp_path: Path
) -> None:
    tajik = countries.stores["TJ"]
    newest = tajik.issue_encryption("TJ-MOL", now=datetime.now(UTC) - timedelta(seconds=5))
    countries.exchange_bundles()  # RU now seals for TJ-MOL's newest key
    private = countries.folders["TJ"] / "keys" / "TJ" / "authorities" / "TJ-MOL" / "encryption" / "private"
    lost_key = private / f"{newest.serial_number:x}.key.pem"
    kept_aside = tmp_path / "kept-aside.key.pem"
    lost_key.rename(kept_aside)
    tj = await countries.start("TJ")
    ru = await countries.start("RU")

    with capture_logs() as logs:
        sent = await ru.send(sample_payloads()["worker.death"], to="TJ-MOL", wait_receipt=False)

        async def held_twice() -> bool:
            return _count(tj, "exchange_inbound_held_total", reason=str(Reason.KEY_MISSING)) >= 2

        await wait_until(held_twice, what="TJ to hold the death notice for its missing key")
    held = [event for event in logs if event["event"] == "inbound.held"]
    assert held[0]["log_level"] == "error"
    assert held[0]["holder"] == "TJ-MOL"
    assert held[0]["missing_kids"] == [certificate_thumbprint(newest)]
    assert await exchange.ready("TJ", QUARANTINE) == 0
    assert await tj.audit.find(sent.message_id, kinds=[EntryKind.REJECTED, EntryKind.RECEIPT_SENT]) == []
    record = await ru.outbox.get(sent.message_id)
    assert record is not None
    assert record.receipt_at is None

    kept_aside.rename(lost_key)  # the operator restores the key: the next retry opens the message
    assert await _receipt(ru, sent.message_id) == ("receipted", None)
    assert [e.kind for e in await tj.audit.find(sent.message_id, kinds=[EntryKind.REJECTED])] == []


def _made_up_header(message_id: UUID) -> str:
    """A wrap for TJ-MOL naming a key that is nobody's, as anyone on the path can write."""
    return encode_key_header([WrappedKey(holder="TJ-MOL", kid="made-up-kid", enc=os.urandom(80))])


async def test_a_replayed_copy_with_a_made_up_key_is_answered_as_the_duplicate_it_is(
    countries: Countries, exchange: ExchangeHarness
) -> None:
    tj = await countries.start("TJ")
    ru = await countries.start("RU")
    sent = await ru.send(
        sample_payloads()["worker.death"], to="TJ-MOL", wait_receipt=True, receipt_timeout_s=20
    )
    assert sent.receipt is not None
    assert sent.receipt.verdict == Verdict.ACCEPTED
    [received] = await tj.audit.find(sent.message_id, kinds=[EntryKind.RECEIVED])

    with capture_logs() as logs:
        await exchange.broker["TJ"].publish(
            exchange=INBOUND,
            routing_key="tj",
            body=received.envelope,
            message_id=str(sent.message_id),
            headers={"x-type": "worker.death", SEALED_KEY_HEADER: _made_up_header(sent.message_id)},
        )

        async def answered() -> bool:
            return any(e["event"] == "message.duplicate" and e.get("gateway") == "TJ-GW" for e in logs)

        await wait_until(answered, what="TJ to answer the replayed copy as a duplicate")
    assert await exchange.ready("TJ", QUARANTINE) == 0
    assert _count(tj, "exchange_inbound_held_total", reason=str(Reason.KEY_MISSING)) == 0
    assert await tj.audit.find(sent.message_id, kinds=[EntryKind.REJECTED]) == []


async def test_a_stale_copy_with_a_made_up_key_is_refused_as_stale_before_any_key_is_looked_up(
    exchange: ExchangeHarness,
) -> None:
    tj = await exchange.new_gateway("TJ")
    dev = exchange.dev
    created = datetime.now(UTC) - timedelta(days=8)  # the session PKI is 60 days old: still valid then
    old = seal(
        sample_payloads()["worker.death"],
        sender="RU-MVD",
        recipient="TJ-MOL",
        signer=dev.keystore.signer("RU-MVD", at=created),
        created_at=created,
        data_key=os.urandom(32),
    )
    await exchange.broker["TJ"].publish(
        exchange=INBOUND,
        routing_key="tj",
        body=old.raw,
        message_id=str(old.envelope.id),
        headers={"x-type": "worker.death", SEALED_KEY_HEADER: _made_up_header(old.envelope.id)},
    )

    async def quarantined() -> list[Any] | None:
        return await exchange.broker["TJ"].peek(QUARANTINE) or None

    [copy] = await wait_until(quarantined, what="the stale copy in TJ's quarantine")
    assert copy.headers["x-reason"] == str(Reason.REPLAY_STALE)
    assert _count(tj, "exchange_inbound_held_total", reason=str(Reason.KEY_MISSING)) == 0
