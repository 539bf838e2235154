"""Every refusal of the HTTP API is an RFC 9457 problem with the reason code, and is logged with the
caller: one test per reason family (schema, rule, policy, auth, size), and a caller that tries to act
as another authority."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from broker.exchange.gateway import Gateway
from tests.api.test_submitting import death_notice
from tests.support.exchange import ExchangeHarness
from tests.support.http_api import HttpApi, sealed_by

pytestmark = pytest.mark.rabbitmq

StartApi = Callable[..., Awaitable[HttpApi]]


def assert_problem(response: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["type"] == f"urn:labour-exchange:reason:{reason}"
    assert (problem["status"], problem["reason"]) == (status, reason)
    assert problem["title"]
    assert problem["detail"]
    assert problem["instance"] == response.request.url.path
    return problem


def refusals(events: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [event for event in events if event["event"] == "api.refused"]


async def test_problem_shape_of_each_reason_family(
    exchange: ExchangeHarness, api_gateways: dict[str, Gateway], http_api: StartApi
) -> None:
    api = await http_api("RU", max_message_bytes=64 * 1024)
    schema_broken = death_notice()
    del schema_broken["payload"]["date_of_death"]  # type: ignore[attr-defined]
    rule_broken = copy.deepcopy(death_notice())
    rule_broken["payload"]["responsible_party"] = "host_state_customer"  # type: ignore[index] # Art. 15.3

    with capture_logs() as events:
        schema = await api.post("/v1/messages", as_="RU-MVD", json=schema_broken)
        rule = await api.post("/v1/messages", as_="RU-MVD", json=rule_broken)
        policy = await api.post("/v1/messages", as_="RU-MINTRUD", json=death_notice())
        no_token = await api.client.post("/v1/messages", json=death_notice())
        bad_token = await api.client.get("/v1/catalogue", headers={"Authorization": "Bearer lxa_nosuch"})
        too_large = await api.post("/v1/messages", as_="RU-MVD", content=b"{" + b" " * 70_000 + b"}",
                                   headers={"Content-Type": "application/json"})  # fmt: skip
        request = await api.get("/v1/authorities/RU-MVD/received", as_="RU-MVD", params={"limit": 0})
        doubled = await api.post("/v1/messages", as_="RU-MVD", headers={"Content-Type": "application/json"},
                                 content=b'{"type": "worker.death", "type": "legislation.change"}')  # fmt: skip

    problem = assert_problem(schema, 422, "schema.invalid")
    assert problem["errors"][0]["path"] == "payload.date_of_death"
    problem = assert_problem(rule, 422, "agreement.rule")
    assert problem["article"] == "15.3"
    assert problem["errors"][0]["path"].startswith("payload")
    assert problem["errors"][0]["article"] == "15.3"
    problem = assert_problem(policy, 403, "policy.sender_not_allowed")
    assert problem["article"] == "15.5"
    assert_problem(no_token, 401, "auth.unauthenticated")
    assert no_token.headers["WWW-Authenticate"] == "Bearer"
    assert_problem(bad_token, 401, "auth.unauthenticated")
    assert_problem(too_large, 413, "submission.oversized")
    problem = assert_problem(request, 422, "api.request_invalid")
    assert problem["errors"][0]["path"] == "query.limit"
    assert "duplicate" in assert_problem(doubled, 400, "api.request_invalid")["detail"]
    logged = {(event["status"], event["reason"], event["caller"]) for event in refusals(events)}
    assert (401, "auth.unauthenticated", None) in logged
    assert (403, "policy.sender_not_allowed", "RU-MINTRUD") in logged
    assert (422, "schema.invalid", "RU-MVD") in logged
    assert await api_gateways["RU"].outbox.records() == []


async def test_a_caller_acts_only_as_itself_and_each_refusal_is_logged(
    exchange: ExchangeHarness, api_gateways: dict[str, Gateway], http_api: StartApi
) -> None:
    api = await http_api("RU")
    report = {
        "type": "labour_market.report",
        "to": "TJ-MOL",
        "payload": _payload("labour_market.report"),
    }
    theirs = await api.post("/v1/messages", as_="RU-MINTRUD", json=report)
    assert theirs.status_code == 202, theirs.text
    message_id = theirs.json()["message_id"]

    with capture_logs() as events:
        as_other = await api.post("/v1/messages", as_="RU-MVD", json=report | {"sender": "RU-MINTRUD"})
        status = await api.get(f"/v1/messages/{message_id}", as_="RU-MVD")
        receipt = await api.get(f"/v1/messages/{message_id}/receipt", as_="RU-MVD")
        proof = await api.get(f"/v1/messages/{message_id}/proof", as_="RU-MVD")
        listing = await api.get("/v1/authorities/RU-MINTRUD/received", as_="RU-MVD")

    for response in (as_other, status, receipt, proof, listing):
        problem = assert_problem(response, 403, "auth.forbidden")
        assert "RU-MVD" in problem["detail"]
    logged = refusals(events)
    assert [(event["caller"], event["reason"], event["path"]) for event in logged] == [
        ("RU-MVD", "auth.forbidden", "/v1/messages"),
        ("RU-MVD", "auth.forbidden", f"/v1/messages/{message_id}"),
        ("RU-MVD", "auth.forbidden", f"/v1/messages/{message_id}/receipt"),
        ("RU-MVD", "auth.forbidden", f"/v1/messages/{message_id}/proof"),
        ("RU-MVD", "auth.forbidden", "/v1/authorities/RU-MINTRUD/received"),
    ]
    assert len(await api_gateways["RU"].outbox.records()) == 1  # only RU-MINTRUD's own message
    own = await api.get(f"/v1/messages/{message_id}", as_="RU-MINTRUD")
    assert own.status_code == 200, own.text


async def test_a_sealed_envelope_signed_by_another_authority_is_forbidden(
    exchange: ExchangeHarness, api_gateways: dict[str, Gateway], http_api: StartApi
) -> None:
    api = await http_api("RU")
    sealed = sealed_by(exchange, "labour_market.report", sender="RU-MINTRUD", recipient="TJ-MOL")

    response = await api.post("/v1/envelopes", as_="RU-MVD", content=sealed.raw)

    assert_problem(response, 403, "auth.forbidden")
    assert await api_gateways["RU"].outbox.records() == []


async def test_over_its_rate_a_caller_gets_429_with_retry_after(
    exchange: ExchangeHarness, http_api: StartApi
) -> None:
    api = await http_api("RU", api_burst=3, api_requests_per_s=0.01)

    answers = [await api.get("/v1/catalogue", as_="RU-MVD") for _ in range(4)]
    other = await api.get("/v1/catalogue", as_="RU-MINTRUD")

    assert [a.status_code for a in answers[:3]] == [200, 200, 200]
    assert_problem(answers[3], 429, "api.rate_limited")
    assert int(answers[3].headers["Retry-After"]) >= 1
    assert other.status_code == 200  # the bucket is per caller


def _payload(message_type: str) -> dict[str, Any]:
    from broker.core.catalogue import payload_to_json, sample_payloads  # noqa: PLC0415

    return payload_to_json(sample_payloads()[message_type])


async def test_a_request_over_the_timeout_is_504_and_a_long_poll_without_receipt_returns_the_state(
    exchange: ExchangeHarness, http_api: StartApi
) -> None:
    await exchange.new_gateway("RU")  # no TJ gateway: no receipt will come
    api = await http_api("RU", api_request_timeout_s=1.0)
    sent = await api.post("/v1/messages", as_="RU-MVD", json=death_notice())
    assert sent.status_code == 202, sent.text
    location = sent.headers["Location"]

    with capture_logs() as events:
        too_long = await api.get(location, as_="RU-MVD", params={"wait": 5})
    short = await api.get(location, as_="RU-MVD", params={"wait": 0})

    assert_problem(too_long, 504, "api.timeout")
    assert [e["reason"] for e in refusals(events)] == ["api.timeout"]
    assert short.status_code == 200
    assert short.json()["state"] in ("sent", "confirmed")
