"""Two agreements at one gateway (issue 20): Tajikistan with Russia (2004) and with Uzbekistan (2021).

Three countries on the real RabbitMQ, in vhosts of their own: TJ's gateway serves both agreements,
RU's and UZ's only their own. The TJ-UZ plan ran 2021-2023; the exchange here uses it as an operator
would after a renewal: a copy of the shipped file with one more `[[period]]` (docs/decisions.md,
"Agreements and their periods"). Every refusal named by the issue is fed and its reason code asserted.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Iterator, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from structlog.testing import capture_logs
from typer.testing import CliRunner, Result

from broker.audit import EntryKind
from broker.cli.app import app
from broker.core.catalogue.receipt import ReceiptBatch, ReceiptLine, Verdict
from broker.core.errors import LocalError, Reason
from broker.exchange.devkit import DevExchange, write_settings_file
from broker.exchange.health import PeerLink, Readiness
from broker.state.outbox import SendState
from tests.cli.test_error_path import broker, one_error_line
from tests.support.countries import WAIT_S, Countries, provisioned, rejected_at, renewed_plan, sample, settled
from tests.support.exchange import wait_until

pytestmark = pytest.mark.rabbitmq


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevExchange]:
    workdir = tmp_path_factory.mktemp("three-countries")
    dev = provisioned(workdir, ["tj-ru-2004", str(renewed_plan(workdir / "operator"))])
    try:
        yield dev
    finally:
        dev.teardown()


@pytest_asyncio.fixture
async def countries(three: DevExchange, tmp_path: Path) -> AsyncIterator[Countries]:
    held = Countries(three, tmp_path)
    try:
        yield held
    finally:
        await held.close()


# -- the exchange with two peers ------------------------------------------------------------------


async def test_one_tajik_gateway_exchanges_with_russia_and_uzbekistan_each_under_its_agreement(
    countries: Countries, tmp_path: Path
) -> None:
    tj, ru, uz = [await countries.gateway(country) for country in ("TJ", "RU", "UZ")]
    assert tj.peers == ("RU", "UZ")
    assert ru.peers == ("TJ",)
    assert uz.peers == ("TJ",)
    law = sample("legislation.change")

    to_ru, to_uz = await asyncio.gather(
        tj.send(law, to="RU-MINTRUD", wait_receipt=True, receipt_timeout_s=WAIT_S),
        tj.send(law, to="UZ-MEHNAT", wait_receipt=True, receipt_timeout_s=WAIT_S),
    )
    for result in (to_ru, to_uz):
        assert result.receipt is not None
        assert result.receipt.verdict == Verdict.ACCEPTED
    # Each went over its own link only, and was receipted by that peer's gateway.
    assert await ru.audit.find(to_ru.message_id, kinds=[EntryKind.RECEIVED])
    assert not await ru.audit.find(to_uz.message_id)
    assert await uz.audit.find(to_uz.message_id, kinds=[EntryKind.RECEIVED])
    assert not await uz.audit.find(to_ru.message_id)
    [from_ru] = await tj.audit.find(to_ru.message_id, kinds=[EntryKind.RECEIPT_RECEIVED])
    [from_uz] = await tj.audit.find(to_uz.message_id, kinds=[EntryKind.RECEIPT_RECEIVED])
    assert (from_ru.peer, from_uz.peer) == ("RU-GW", "UZ-GW")

    # And the other way: Uzbekistan's labour-market report (item 5) and Russia's death notice.
    report = await uz.send(
        sample("labour_market.report"), to="TJ-MOL", wait_receipt=True, receipt_timeout_s=WAIT_S
    )
    death = await ru.send(sample("worker.death"), to="TJ-MOL", wait_receipt=True, receipt_timeout_s=WAIT_S)
    for result in (report, death):
        assert result.receipt is not None
        assert result.receipt.verdict == Verdict.ACCEPTED
    [received] = await tj.audit.find(report.message_id, kinds=[EntryKind.RECEIVED])
    assert received.peer == "UZ-MEHNAT"

    # Witnessing per peer: each peer countersigned a checkpoint of TJ's log, sent back over its link.
    async def witnessed_by_both() -> bool:
        peers = {
            entry.peer
            async for entry in tj.audit.entries()
            if entry.kind == EntryKind.RECEIVED and entry.message_type == "checkpoint.witness"
        }
        return {"RU-GW", "UZ-GW"} <= peers

    await wait_until(witnessed_by_both, what="countersignatures from RU-GW and UZ-GW", timeout_s=WAIT_S)
    await reconcile_per_peer(countries, tmp_path)


async def reconcile_per_peer(countries: Countries, tmp_path: Path) -> None:
    """`broker audit reconcile --between` is clean for each peer; without it, TJ's log (holding both
    peers' messages) does not reconcile against UZ's alone."""
    await countries.close()
    countries.gateways.clear()
    countries.broker.clear()
    store = {c: str(tmp_path / c.lower() / "audit.sqlite") for c in ("TJ", "RU", "UZ")}
    runner = CliRunner()

    def reconcile(*args: str) -> Result:  # the command runs its own event loop: not on this one's thread
        return runner.invoke(app, ["audit", "reconcile", *args])

    for peer in ("RU", "UZ"):
        clean = await asyncio.to_thread(reconcile, store["TJ"], store[peer], "--between", f"TJ,{peer}")
        assert clean.exit_code == 0, clean.output
        assert "no gaps" in clean.output
    mixed = await asyncio.to_thread(reconcile, store["TJ"], store["UZ"])
    assert mixed.exit_code != 0
    assert "audit.reconcile_gap" in mixed.output
    wrong = await asyncio.to_thread(reconcile, store["TJ"], store["UZ"], "--between", "TJ")
    assert wrong.exit_code != 0
    assert "config.invalid" in wrong.output


# -- refusals ---------------------------------------------------------------------------------------


async def test_a_death_notice_to_uzbekistan_is_refused_at_the_sender_and_at_the_receiver(
    countries: Countries,
) -> None:
    tj, uz = await countries.gateway("TJ"), await countries.gateway("UZ")
    with pytest.raises(LocalError) as refused:
        await tj.send(sample("worker.death"), to="UZ-MEHNAT")
    assert refused.value.reason == Reason.POLICY_TYPE_NOT_COVERED
    assert "tj-uz-2021" in refused.value.diagnostic

    # Signed elsewhere and handed over unchecked: Uzbekistan's gateway refuses it the same way.
    sealed = countries.sealed(sample("worker.death"), sender="TJ-MOL", recipient="UZ-MEHNAT")
    await tj.publish_sealed(sealed)
    await wait_until(
        lambda: settled(tj, sealed.envelope.id, SendState.REJECTED),
        what="UZ's negative receipt",
        timeout_s=WAIT_S,
    )
    record = await tj.outbox.get(sealed.envelope.id)
    assert record is not None
    assert record.reason == Reason.POLICY_TYPE_NOT_COVERED
    assert await rejected_at(uz, sealed.envelope.id) == Reason.POLICY_TYPE_NOT_COVERED
    assert await countries.quarantined_reason("UZ", sealed.envelope.id) == Reason.POLICY_TYPE_NOT_COVERED


@pytest.mark.parametrize(
    ("sender", "recipient", "signer", "message_type", "reason"),
    [
        # A Russian key claiming an Uzbek sender: never accepted, whatever the agreement says.
        ("UZ-MEHNAT", "TJ-MOL", "RU-MVD", "legislation.change", Reason.CERT_AUTHORITY_MISMATCH),
        # Russia's ministry speaking to Uzbekistan through TJ: no agreement of TJ binds RU and UZ.
        ("RU-MVD", "UZ-MEHNAT", None, "legislation.change", Reason.POLICY_NO_AGREEMENT),
        # A type of the TJ-RU agreement sent under the TJ-UZ plan: not accepted as the other's.
        ("UZ-MEHNAT", "TJ-MOL", None, "worker.death", Reason.POLICY_TYPE_NOT_COVERED),
        # Under the right agreement still every rule holds: RU's consulate sends no legislation.
        ("RU-CONSULATE-DUSHANBE", "TJ-MOL", None, "legislation.change", Reason.POLICY_SENDER_NOT_ALLOWED),
    ],
    ids=[
        "russian-key-uzbek-sender",
        "peer-speaks-for-third-country",
        "other-agreements-type",
        "role-not-sender",
    ],
)
async def test_what_arrives_at_tajikistan_under_the_wrong_agreement_is_rejected(
    countries: Countries, sender: str, recipient: str, signer: str | None, message_type: str, reason: Reason
) -> None:
    tj = await countries.gateway("TJ")
    sealed = countries.sealed(sample(message_type), sender=sender, recipient=recipient, signer=signer)
    await countries.inject("TJ", sealed)
    rejected = await wait_until(
        lambda: rejected_at(tj, sealed.envelope.id), what=f"TJ to reject {sender}'s message", timeout_s=WAIT_S
    )
    assert rejected == reason
    assert await countries.quarantined_reason("TJ", sealed.envelope.id) == reason
    assert not await tj.audit.find(sealed.envelope.id, kinds=[EntryKind.RECEIVED])


async def test_a_peers_gateway_cannot_settle_a_message_sent_to_the_other_peer(countries: Countries) -> None:
    tj = await countries.gateway("TJ")  # Russia's gateway is not running: no real receipt comes
    sent = await tj.send(sample("legislation.change"), to="RU-MINTRUD")
    forged = ReceiptBatch(
        received_at=datetime.now(UTC),
        checkpoint=None,
        lines=(
            ReceiptLine(
                message_id=sent.message_id,
                sha256=sent.sha256,
                verdict=Verdict.REJECTED,
                reason=str(Reason.SCHEMA_INVALID),
                diagnostic="Uzbekistan's gateway answering for Russia",
                audit_index=0,
            ),
        ),
    )
    sealed = countries.sealed(forged, sender="UZ-GW", recipient="TJ-GW")
    with capture_logs() as logs:
        await countries.inject("TJ", sealed)

        async def logged() -> list[MutableMapping[str, Any]]:
            return [e for e in logs if e["event"] == "receipt.wrong_peer"]

        [event] = await wait_until(
            logged, what="TJ to set UZ's answer for RU's message aside", timeout_s=WAIT_S
        )
    assert event["recipient"] == "RU-MINTRUD"
    record = await tj.outbox.get(sent.message_id)
    assert record is not None
    assert record.state == SendState.CONFIRMED  # still waiting for Russia's own receipt
    assert record.reason is None


async def test_outside_the_plans_period_a_message_is_refused_at_the_sender_and_at_the_receiver(
    countries: Countries,
) -> None:
    # Uzbekistan runs the shipped plan, not renewed: 2021-2023 only.
    tj, uz = await countries.gateway("TJ"), await countries.gateway("UZ", agreements=("tj-uz-2021",))
    result = await tj.send(
        sample("legislation.change"), to="UZ-MEHNAT", wait_receipt=True, receipt_timeout_s=WAIT_S
    )
    assert result.receipt is not None
    assert result.receipt.verdict == Verdict.REJECTED
    assert result.receipt.reason == Reason.POLICY_OUTSIDE_PERIOD
    assert "2021-08-01 to 2023-12-31" in (result.receipt.diagnostic or "")
    assert await rejected_at(uz, result.message_id) == Reason.POLICY_OUTSIDE_PERIOD

    # A Tajik gateway on the shipped plan refuses to send at all, naming the period (not started:
    # it only seals, and one gateway at a time takes TJ's inbound queue).
    stale = await countries.gateway(
        "TJ", start=False, agreements=("tj-ru-2004", "tj-uz-2021"), state_dir=countries.state_dir / "b"
    )
    with pytest.raises(LocalError) as refused:
        await stale.send(sample("legislation.change"), to="UZ-MEHNAT")
    assert refused.value.reason == Reason.POLICY_OUTSIDE_PERIOD
    assert "tj-uz-2021" in refused.value.diagnostic
    assert "2023-12-31" in refused.value.diagnostic
    assert not await stale.outbox.get(result.message_id)  # nothing was recorded or published


async def test_readiness_checks_the_link_and_the_trust_of_every_peer(countries: Countries) -> None:
    tj = await countries.gateway("TJ")
    settings = countries.dev.settings["TJ"]
    link = PeerLink.from_settings(settings, tj.peers)
    try:

        async def ready() -> Readiness | None:
            readiness = await tj.readiness(link)
            return readiness if readiness.ready else None

        readiness = await wait_until(ready, what="TJ's links to RU and UZ to run", timeout_s=WAIT_S)
        to_ru, to_uz = readiness.checks["peer_link"].detail.split("; ")
        assert to_ru.startswith("shovel tj-to-ru: running (consuming outbound.ru, ")
        assert to_uz.startswith("shovel tj-to-uz: running (consuming outbound.uz, ")
    finally:
        await link.close()
    # A peer without a link (a third agreement whose topology was not applied) keeps it not ready.
    unlinked = PeerLink.from_settings(settings, ("RU", "UZ", "KG"))
    try:
        readiness = await tj.readiness(unlinked)
    finally:
        await unlinked.close()
    assert not readiness.ready
    assert not readiness.checks["peer_link"].ok
    assert "; shovel tj-to-kg: no queue outbound.kg" in readiness.checks["peer_link"].detail


# -- the operator's path: `broker send` through the running Tajik gateway ---------------------------


async def test_broker_send_reaches_uzbekistan_through_the_running_tajik_gateway(
    countries: Countries, tmp_path: Path
) -> None:
    await countries.gateway("TJ")
    await countries.gateway("UZ")
    config = tmp_path / "tj.toml"
    write_settings_file(config, countries.settings("TJ"))
    secrets_file = tmp_path / "rabbitmq-secrets.json"
    secrets_file.write_text(json.dumps(countries.dev.passwords), encoding="utf-8")
    payloads = {}
    for message_type in ("legislation.change", "worker.death"):
        payloads[message_type] = tmp_path / f"{message_type}.json"
        payloads[message_type].write_text(sample(message_type).model_dump_json(), encoding="utf-8")

    def send(message_type: str) -> subprocess.CompletedProcess[str]:
        return broker("send", "--country", "TJ", "--config", str(config), "--secrets", str(secrets_file),
                      "--type", message_type, "--file", str(payloads[message_type]), "--to", "UZ-MEHNAT",
                      cwd=tmp_path)  # fmt: skip

    accepted = await asyncio.to_thread(send, "legislation.change")
    assert accepted.returncode == 0, accepted.stderr
    sent, verdict = (json.loads(line) for line in accepted.stdout.splitlines() if line.strip())
    assert (sent["sender"], sent["to"]) == ("TJ-MOL", "UZ-MEHNAT")
    assert verdict["verdict"] == "accepted"
    # TJ's one log: every entry of this message names the agreement it was exchanged under.
    status = await asyncio.to_thread(
        broker,
        "status",
        str(sent["message_id"]),
        "--country",
        "TJ",
        "--config",
        str(config),
        "--json",
        cwd=tmp_path,
    )
    trail = json.loads(status.stdout)["trail"]
    assert [entry["kind"] for entry in trail] == ["sent", "receipt-received"]
    assert {(entry["peer"], entry["agreement"]) for entry in trail} == {
        ("UZ-MEHNAT", "tj-uz-2021"),
        ("UZ-GW", "tj-uz-2021"),
    }

    refused = await asyncio.to_thread(send, "worker.death")
    assert "agreement tj-uz-2021 does not cover 'worker.death'" in one_error_line(
        refused, "policy.type_not_covered"
    )
