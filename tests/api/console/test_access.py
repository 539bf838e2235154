"""Every role tries every other role's pages and actions and is refused 403 with the reason code;
refused actions change nothing. Without a token: 401. Without the form's CSRF token: 403."""

from __future__ import annotations

import hashlib
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from structlog.testing import capture_logs

from broker.exchange.gateway import Gateway
from broker.exchange.topology import INBOUND, QUARANTINE
from tests.api.console.test_consulate_console import death
from tests.api.console.test_operator_console import forged
from tests.support.console import AUDITOR, CONSULATE, OPERATOR, StartConsole, receipted
from tests.support.exchange import ExchangeHarness
from tests.support.http_api import HttpApi, sealed_by

pytestmark = pytest.mark.rabbitmq

ANY_ID = "01a235db-7979-736e-b886-9248a675a5b9"
PAGES = {
    "operator": [
        ("GET", "/console/operator"),
        ("GET", "/console/operator/messages"),
        ("GET", f"/console/operator/messages/{ANY_ID}"),
        ("GET", "/console/operator/quarantine"),
        ("GET", f"/console/operator/quarantine/{ANY_ID}"),
        ("GET", "/console/operator/keys"),
        ("POST", "/console/operator/quarantine/{quarantined}/requeue"),
        ("POST", "/console/operator/quarantine/purge"),
    ],
    "auditor": [
        ("GET", "/console/auditor"),
        ("GET", "/console/auditor/summary"),
        ("GET", "/console/auditor/verify/0123456789abcdef"),
        ("GET", "/console/auditor/verify/0123456789abcdef/progress"),
        ("GET", f"/console/auditor/proof?message_id={ANY_ID}&kind=sent"),
        ("GET", "/console/auditor/bundle?worker=400123456"),
        ("POST", "/console/auditor/verify"),
    ],
    "consulate": [
        ("GET", "/console/consulate"),
        ("GET", "/console/consulate/alerts.csv"),
        ("POST", "/console/consulate/alerts/{alert}/handled"),
    ],
}


def role_holders(country: str) -> dict[str, str]:
    # A ministry has no console role at all: every page is another role's.
    return {
        "operator": OPERATOR[country],
        "auditor": AUDITOR[country],
        "consulate": CONSULATE[country],
        "ministry": f"{country}-MVD",
    }


def csrf_of_page(text: str) -> str:
    marker = 'name="csrf" value="'
    start = text.index(marker) + len(marker)
    return text[start : text.index('"', start)]


async def csrf_for(api: HttpApi, authority: str) -> str:
    """The CSRF token a page shows `authority` (any of its pages with a form)."""
    from broker.api.console.access import csrf_of  # noqa: PLC0415 - the same derivation the page shows

    return csrf_of(api.tokens[authority])


async def request(api: HttpApi, method: str, path: str, authority: str, **values: str) -> httpx.Response:
    url = path.format(**values)
    if method == "GET":
        return await api.get(url, as_=authority)
    data = {"csrf": await csrf_for(api, authority), "first": "0", "last": "0"}
    return await api.post(url, as_=authority, data=data)


async def test_every_role_is_refused_every_other_roles_pages_and_actions(
    exchange: ExchangeHarness, api_gateways: dict[str, Gateway], console_site: StartConsole, tmp_path: Path
) -> None:
    tj = await console_site("TJ")
    sealed = sealed_by(exchange, "employer.permit", sender="RU-MINTRUD", recipient="TJ-MOL")
    quarantined = str(sealed.envelope.id)
    await exchange.broker["TJ"].publish(
        exchange=INBOUND, routing_key="tj", body=forged(sealed), message_id=quarantined
    )
    await exchange.wait_until(lambda: _held(exchange, quarantined), what="the forgery in TJ's quarantine")
    values = {"quarantined": quarantined, "alert": ANY_ID}

    refused = []
    for role, holder in role_holders("TJ").items():
        for page_role, pages in PAGES.items():
            if page_role == role:
                continue
            for method, path in pages:
                response = await request(tj, method, path, holder, **values)
                assert response.status_code == 403, (
                    holder,
                    method,
                    path,
                    response.status_code,
                    response.text[:300],
                )
                assert "error [auth.forbidden]" in response.text, (holder, path)
                refused.append((holder, method, path))
    # 10 for the operator, 11 for the auditor, 15 for the consulate, all 18 for a ministry.
    assert len(refused) == 54
    # The same requests as the role they belong to are not refused (the check is not "always 403").
    for role in ("operator", "auditor", "consulate"):
        for method, path in PAGES[role]:
            if method == "GET" and not any(mark in path for mark in ("{", "?", ANY_ID, "0123456789abcdef")):
                own = await request(tj, method, path, role_holders("TJ")[role])
                assert own.status_code == 200, (role, path, own.text[:300])
    # Nothing any refused action touched has changed: the quarantined message is still there.
    assert await _held(exchange, quarantined)

    # Each refusal is logged with who asked for what.
    with capture_logs() as logs:
        await request(tj, "POST", "/console/operator/quarantine/purge", AUDITOR["TJ"])
    assert [
        (e["authority"], e["path"], e["status"], e["reason"]) for e in logs if e["event"] == "console.refused"
    ] == [(AUDITOR["TJ"], "/console/operator/quarantine/purge", 403, "auth.forbidden")]

    # Without a token: 401 (a browser is sent to the login page instead).
    bare = await tj.client.get("/console/operator")
    assert bare.status_code == 303
    assert bare.headers["location"].startswith("/console/login")
    scripted = await tj.client.get("/console/operator", headers={"Authorization": "Bearer lxa_not-a-token"})
    assert scripted.status_code == 401
    assert "error [auth.unauthenticated]" in scripted.text

    # The right role without the form's CSRF token, or with another session's: 403, nothing done.
    for csrf in ("", await csrf_for(tj, AUDITOR["TJ"])):
        purge = await tj.post("/console/operator/quarantine/purge", as_=OPERATOR["TJ"], data={"csrf": csrf})
        assert purge.status_code == 403
        assert "error [console.csrf_invalid]" in purge.text
    assert await _held(exchange, quarantined)
    # With it, the operator's action is done.
    page = await tj.get("/console/operator/quarantine", as_=OPERATOR["TJ"])
    with capture_logs() as logs:
        done = await tj.post(
            "/console/operator/quarantine/purge", as_=OPERATOR["TJ"], data={"csrf": csrf_of_page(page.text)}
        )
    assert done.status_code == 303
    [action] = [e for e in logs if e["event"] == "console.action"]
    assert (action["authority"], action["action"], action["outcome"]) == (
        OPERATOR["TJ"],
        "quarantine.purge",
        "1 messages purged",
    )
    assert not await _held(exchange, quarantined)


async def test_a_consulate_cannot_mark_or_see_another_countrys_nationals(
    exchange: ExchangeHarness, api_gateways: dict[str, Gateway], console_site: StartConsole
) -> None:
    ru = await console_site("RU")
    ours = await receipted(ru, death())
    foreign = await receipted(ru, death("UZ"))
    tj = await console_site("TJ")
    consulate = CONSULATE["TJ"]
    csrf = await csrf_for(tj, consulate)

    for message_id in (foreign, str(uuid4())):
        marked = await tj.post(
            f"/console/consulate/alerts/{message_id}/handled", as_=consulate, data={"csrf": csrf}
        )
        assert marked.status_code == 404
        assert "error [api.not_found]" in marked.text
    listed = await tj.get("/console/consulate/alerts.csv", as_=consulate)
    assert ours in listed.text
    assert foreign not in listed.text
    marked = await tj.post(f"/console/consulate/alerts/{ours}/handled", as_=consulate, data={"csrf": csrf})
    assert marked.status_code == 303


async def _held(exchange: ExchangeHarness, message_id: str) -> bool | None:
    messages = await exchange.broker["TJ"].peek(QUARANTINE, limit=100)
    return True if any(m.message_id == message_id for m in messages) else None


async def test_hostile_bytes_in_the_quarantine_are_shown_escaped_never_as_markup(
    exchange: ExchangeHarness, api_gateways: dict[str, Gateway], console_site: StartConsole
) -> None:
    tj = await console_site("TJ")
    body = b'<script>alert("body")</script>\x1b[31m'
    digest = hashlib.sha256(body).hexdigest()
    await exchange.broker["TJ"].publish(
        exchange=INBOUND, routing_key="tj", body=body, message_id=str(uuid4())
    )
    # Bytes without a readable id are quarantined under their SHA-256.
    await exchange.wait_until(
        lambda: _held(exchange, f"sha256:{digest}"), what="the hostile bytes in quarantine"
    )

    listing = await tj.get("/console/operator/quarantine", as_=OPERATOR["TJ"])
    assert listing.status_code == 200
    assert f"sha256:{digest}" in listing.text
    shown = await tj.get(f"/console/operator/quarantine/sha256:{digest}", as_=OPERATOR["TJ"])
    assert shown.status_code == 200, shown.text[:300]
    assert "&lt;script&gt;alert(" in shown.text
    assert "<script>alert(" not in shown.text
    assert "\\x1b[31m" in shown.text  # a terminal escape is shown as its escape, never sent raw
    assert "\x1b" not in shown.text


async def test_signing_in_refuses_unknown_tokens_and_returns_only_to_console_pages(
    exchange: ExchangeHarness, api_gateways: dict[str, Gateway], console_site: StartConsole
) -> None:
    tj = await console_site("TJ")
    wrong = await tj.client.post("/console/login", data={"token": "lxa_guess", "next": "/console/consulate"})
    assert wrong.status_code == 401
    assert "error [auth.unauthenticated]" in wrong.text
    for asked, landed in (
        ("/console/auditor", "/console/auditor"),
        ("https://elsewhere.example/", "/console"),
        ("//elsewhere.example/console/", "/console"),
    ):
        signed = await tj.client.post(
            "/console/login", data={"token": tj.tokens[AUDITOR["TJ"]], "next": asked}
        )
        assert signed.status_code == 303
        assert signed.headers["location"] == landed
        assert "HttpOnly" in signed.headers["set-cookie"]
        assert "SameSite=strict" in signed.headers["set-cookie"]
