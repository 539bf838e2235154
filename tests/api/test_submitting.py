"""Submitting over HTTP against the real RabbitMQ and both running gateways: accepted, receipted,
followed, proven; the same Idempotency-Key never sends twice."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from uuid import UUID

import pytest

from broker.audit.proofs import InclusionProof, check_inclusion, read_proof
from broker.core.catalogue import payload_to_json, sample_payloads
from broker.exchange.gateway import Gateway
from tests.cli.test_error_path import BROKER
from tests.support.exchange import ExchangeHarness
from tests.support.http_api import HttpApi, sealed_by

pytestmark = pytest.mark.rabbitmq

StartApi = Callable[..., Awaitable[HttpApi]]


def death_notice(to: str = "TJ-MOL") -> dict[str, object]:
    return {"type": "worker.death", "to": to, "payload": payload_to_json(sample_payloads()["worker.death"])}


async def test_a_death_notice_over_http_is_receipted_followed_and_proven(
    exchange: ExchangeHarness, api_gateways: dict[str, Gateway], http_api: StartApi, tmp_path: Path
) -> None:
    api = await http_api("RU")

    submitted = await api.post("/v1/messages", as_="RU-MVD", json=death_notice())

    assert submitted.status_code == 202, submitted.text
    body = submitted.json()
    message_id = UUID(body["message_id"])
    assert submitted.headers["Location"] == f"/v1/messages/{message_id}"
    assert (body["sender"], body["to"], body["repeated"]) == ("RU-MVD", "TJ-MOL", False)

    status = await api.get(submitted.headers["Location"], as_="RU-MVD", params={"wait": 30})
    assert status.status_code == 200, status.text
    assert status.json()["state"] == "receipted"
    kinds = [entry["kind"] for entry in status.json()["trail"]]
    assert kinds[0] == "sent"
    assert "receipt-received" in kinds

    receipt = await api.get(f"/v1/messages/{message_id}/receipt", as_="RU-MVD")
    assert receipt.status_code == 200, receipt.text
    assert receipt.json()["verdict"] == "accepted"
    assert receipt.json()["receipt"]  # the signed receipt's bytes

    proof = await exchange.wait_until(
        lambda: _proof(api, message_id), what="a checkpoint covering the receipt", timeout_s=20
    )
    read = read_proof(proof)
    assert isinstance(read, InclusionProof)
    checked = check_inclusion(read, trust=exchange.trust)
    assert checked.draft.kind == "receipt-received"
    proof_file = tmp_path / "proof.json"
    proof_file.write_bytes(proof)
    process = await asyncio.create_subprocess_exec(
        str(BROKER), "audit", "check-proof", str(proof_file), "--keys", str(api.keys_dir),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    assert "OK" in out.decode()
    assert str(message_id) in out.decode()  # the batched receipt lists the message


async def _proof(api: HttpApi, message_id: UUID | str) -> bytes | None:
    response = await api.get(f"/v1/messages/{message_id}/proof", as_="RU-MVD")
    if response.status_code == 404 and response.json()["reason"] == "audit.not_covered":
        return None
    assert response.status_code == 200, response.text
    return response.content


async def test_the_same_idempotency_key_names_one_message_and_another_body_is_409(
    exchange: ExchangeHarness, api_gateways: dict[str, Gateway], http_api: StartApi
) -> None:
    api = await http_api("RU")
    key = {"Idempotency-Key": "ministry-ref-0042"}

    first, at_once = await asyncio.gather(  # the same key twice at the same moment: one message
        api.post("/v1/messages", as_="RU-MVD", json=death_notice(), headers=key),
        api.post("/v1/messages", as_="RU-MVD", json=death_notice(), headers=key),
    )
    again = await api.post("/v1/messages", as_="RU-MVD", json=death_notice(), headers=key)
    other = await api.post("/v1/messages", as_="RU-MVD", json=death_notice("TJ-MOL") | {"version": 1,
                           "correlation_id": "0190f7d0-0000-7000-8000-000000000000"}, headers=key)  # fmt: skip

    assert (first.status_code, at_once.status_code, again.status_code) == (202, 202, 202), at_once.text
    assert first.json()["message_id"] == at_once.json()["message_id"] == again.json()["message_id"]
    assert sorted([first.json()["repeated"], at_once.json()["repeated"]]) == [False, True]
    assert again.json()["repeated"] is True
    assert other.status_code == 409, other.text
    assert other.json()["reason"] == "submission.request_reused"
    assert len(await api_gateways["RU"].outbox.records()) == 1


async def test_an_envelope_the_ministry_sealed_is_sent_byte_for_byte(
    exchange: ExchangeHarness, api_gateways: dict[str, Gateway], http_api: StartApi
) -> None:
    api = await http_api("RU")
    sealed = sealed_by(exchange, "employer.permit", sender="RU-MVD", recipient="TJ-MOL")

    response = await api.post("/v1/envelopes", as_="RU-MVD", content=sealed.raw,
                              headers={"Content-Type": "application/json"})  # fmt: skip

    assert response.status_code == 202, response.text
    assert (response.json()["message_id"], response.json()["sha256"]) == (
        str(sealed.envelope.id),
        sealed.sha256,
    )
    record = await api_gateways["RU"].outbox.get(sealed.envelope.id)
    assert record is not None
    assert record.raw == sealed.raw


async def test_without_a_running_gateway_a_submission_is_503_and_nothing_waits(
    exchange: ExchangeHarness, http_api: StartApi
) -> None:
    api = await http_api("RU")

    response = await api.post("/v1/messages", as_="RU-MVD", json=death_notice())

    assert response.status_code == 503, response.text
    assert response.json()["reason"] == "submission.no_gateway"
    assert await exchange.ready("RU", "submit") == 0
