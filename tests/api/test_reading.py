"""Reading over HTTP: received messages for an authority (paged, opened only for those entitled), proofs
of a received message, and the catalogue with its JSON Schemas."""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from broker.core.catalogue import payload_to_json, sample_payloads
from broker.exchange.gateway import Gateway
from broker.state.key_vault import KeyVault
from tests.api.test_refusals import assert_problem
from tests.api.test_submitting import death_notice
from tests.support.audit_logs import PG_DSN
from tests.support.exchange import ExchangeHarness
from tests.support.http_api import HttpApi

pytestmark = pytest.mark.rabbitmq

StartApi = Callable[..., Awaitable[HttpApi]]
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "json"


async def _send_two(api: HttpApi) -> list[str]:
    """A death notice (personal, sealed) and an employer permit, from RU-MVD to TJ-MOL, receipted."""
    permit = {"type": "employer.permit", "to": "TJ-MOL",
              "payload": payload_to_json(sample_payloads()["employer.permit"])}  # fmt: skip
    ids = []
    for body in (death_notice(), permit):
        response = await api.post("/v1/messages", as_="RU-MVD", json=body)
        assert response.status_code == 202, response.text
        ids.append(response.json()["message_id"])
        done = await api.get(f"/v1/messages/{ids[-1]}", as_="RU-MVD", params={"wait": 30})
        assert done.json()["state"] == "receipted"
    return ids


async def test_received_messages_are_paged_and_opened_only_for_those_entitled(
    exchange: ExchangeHarness, api_gateways: dict[str, Gateway], http_api: StartApi
) -> None:
    death_id, permit_id = await _send_two(await http_api("RU"))
    tj = await http_api("TJ")

    first = await tj.get("/v1/authorities/TJ-MOL/received", as_="TJ-MOL", params={"limit": 1})
    assert first.status_code == 200, first.text
    [death] = first.json()["items"]
    second = await tj.get("/v1/authorities/TJ-MOL/received", as_="TJ-MOL",
                          params={"limit": 5, "cursor": first.json()["next_cursor"]})  # fmt: skip
    [permit] = second.json()["items"]
    consulate = await tj.get("/v1/authorities/TJ-CONSULATE-MOSCOW/received", as_="TJ-CONSULATE-MOSCOW")
    interior = await tj.get("/v1/authorities/TJ-MVD/received", as_="TJ-MVD")

    assert (death["message_id"], permit["message_id"]) == (death_id, permit_id)
    assert death["payload_state"] == "open"
    assert death["payload"] == payload_to_json(
        sample_payloads()["worker.death"]
    )  # opened: sealed on the wire
    assert (death["sender"], death["recipient"], death["type"]) == ("RU-MVD", "TJ-MOL", "worker.death")
    assert permit["payload"] == payload_to_json(sample_payloads()["employer.permit"])
    # The agreement's subscribers: the consulate receives death notices, not employer permits; the
    # interior ministry the reverse.
    assert [item["message_id"] for item in consulate.json()["items"]] == [death_id]
    assert consulate.json()["items"][0]["payload_state"] == "open"
    assert [item["message_id"] for item in interior.json()["items"]] == [permit_id]
    later = await tj.get("/v1/authorities/TJ-MOL/received", as_="TJ-MOL",
                         params={"cursor": second.json()["next_cursor"]})  # fmt: skip
    assert later.json()["items"] == []


async def test_an_erased_payload_is_listed_without_it(
    exchange: ExchangeHarness, api_gateways: dict[str, Gateway], http_api: StartApi
) -> None:
    death_id, _ = await _send_two(await http_api("RU"))
    tj = await http_api("TJ")
    vault = KeyVault.open(tj.settings.country_state_dir / "key-vault.sqlite")
    try:
        assert await vault.destroy(UUID(death_id), at=datetime.now(UTC))
    finally:
        vault.close()

    listed = await tj.get("/v1/authorities/TJ-MOL/received", as_="TJ-MOL")

    death = next(item for item in listed.json()["items"] if item["message_id"] == death_id)
    assert (death["payload_state"], death["payload"]) == ("erased", None)
    assert death["reason"] == "payload.undecryptable"


async def test_a_received_message_is_proven_to_its_recipient_only(
    exchange: ExchangeHarness, api_gateways: dict[str, Gateway], http_api: StartApi
) -> None:
    _, permit_id = await _send_two(await http_api("RU"))
    tj = await http_api("TJ")

    async def proof() -> bytes | None:
        response = await tj.get(f"/v1/messages/{permit_id}/proof", as_="TJ-MOL", params={"kind": "received"})
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        return response.content

    document = json.loads(await exchange.wait_until(proof, what="a checkpoint covering the message"))
    refused = await tj.get(
        f"/v1/messages/{permit_id}/proof", as_="TJ-CONSULATE-MOSCOW", params={"kind": "received"}
    )

    assert document["index"] >= 0
    assert_problem(refused, 403, "auth.forbidden")


async def test_the_catalogue_lists_types_and_serves_the_committed_schemas(
    exchange: ExchangeHarness, http_api: StartApi
) -> None:
    api = await http_api("RU")

    listing = await api.get("/v1/catalogue", as_="RU-MVD")
    death = next(t for t in listing.json()["types"] if t["type"] == "worker.death")
    schema = await api.get(death["schema_url"], as_="RU-MVD")
    unknown = await api.get("/v1/catalogue/no.such/1", as_="RU-MVD")

    assert (death["personal"], death["article"], death["senders"]) == (True, "15.5", ["RU-MVD"])
    assert schema.json() == json.loads((SCHEMAS / "worker.death-1.schema.json").read_text("utf-8"))
    assert_problem(unknown, 404, "api.not_found")


@pytest.mark.postgres
async def test_status_and_proof_read_a_postgresql_audit_log(
    exchange: ExchangeHarness, http_api: StartApi
) -> None:
    """The compose deployment keeps the audit logs in PostgreSQL: the API reads them read-only there."""
    dsn = await _fresh_database()
    try:
        overrides: dict[str, Any] = {"audit_backend": "postgres", "audit_dsn": dsn, "checkpoint_every_s": 0.5}
        for country in ("TJ", "RU"):
            await exchange.new_gateway(country, **overrides)
        api = await http_api("RU", audit_backend="postgres", audit_dsn=dsn)
        sent = await api.post("/v1/messages", as_="RU-MVD", json=death_notice())
        message_id = sent.json()["message_id"]

        status = await api.get(f"/v1/messages/{message_id}", as_="RU-MVD", params={"wait": 30})

        assert status.json()["state"] == "receipted"
        assert status.json()["trail"][0]["kind"] == "sent"

        async def proof() -> bytes | None:
            response = await api.get(
                f"/v1/messages/{message_id}/proof", as_="RU-MVD", params={"kind": "sent"}
            )
            return response.content if response.status_code == 200 else None

        assert json.loads(await exchange.wait_until(proof, what="a checkpoint in PostgreSQL"))["index"] >= 0
    finally:
        await exchange.close_gateways()
        await _drop_database(dsn)


async def _fresh_database() -> str:
    name = f"t_api_{secrets.token_hex(4)}"
    connection = await asyncpg.connect(PG_DSN)
    try:
        await connection.execute(f"CREATE DATABASE {name}")
    finally:
        await connection.close()
    return PG_DSN.rsplit("/", 1)[0] + f"/{name}"


async def _drop_database(dsn: str) -> None:
    connection = await asyncpg.connect(PG_DSN)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {dsn.rsplit('/', 1)[1]} WITH (FORCE)")
    finally:
        await connection.close()
