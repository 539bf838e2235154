"""The console served for real beside both running gateways, with the gateway's status port open.

`console_site(country)` starts that country's gateway status server (for the overview's `/readyz`)
and its API, which serves the console under /console, and hands back the API fixture with the
console's URL. Tokens exist for every authority of the country (`HttpApi.tokens`).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest_asyncio
from playwright.async_api import BrowserContext, Page

from broker.exchange.gateway import Gateway
from broker.exchange.status_server import serving_status
from tests.support.exchange import ExchangeHarness
from tests.support.http_api import HttpApi

StartConsole = Callable[..., Awaitable[HttpApi]]

# The console role of each authority of the shipped agreement, as the console derives it.
OPERATOR = {"TJ": "TJ-GW", "RU": "RU-GW"}
AUDITOR = {"TJ": "TJ-AUDITOR", "RU": "RU-AUDITOR"}
CONSULATE = {"TJ": "TJ-CONSULATE-MOSCOW", "RU": "RU-CONSULATE-DUSHANBE"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest_asyncio.fixture
async def console_site(
    exchange: ExchangeHarness, api_gateways: dict[str, Gateway], http_api: Callable[..., Awaitable[HttpApi]]
) -> AsyncIterator[StartConsole]:
    async with AsyncExitStack() as stack:

        async def start(country: str, **overrides: Any) -> HttpApi:
            port = _free_port()
            status_settings = exchange.settings(country, metrics_port=port, metrics_address="127.0.0.1")
            await stack.enter_async_context(serving_status(api_gateways[country], status_settings))
            return await http_api(country, metrics_port=port, metrics_address="127.0.0.1", **overrides)

        yield start


async def signed_in(context: BrowserContext, api: HttpApi, authority: str) -> Page:
    """A page of `context`, signed in to the console with `authority`'s token through the login form."""
    page = await context.new_page()
    await page.goto(f"{api.url}/console/login")
    await page.fill("#token", api.tokens[authority])
    await page.click("#sign-in")
    await page.wait_for_selector("#who")
    return page


async def receipted(api: HttpApi, body: dict[str, Any]) -> str:
    """Submit `body` as RU-MVD through the API and wait for Tajikistan's receipt; its message id."""
    response = await api.post("/v1/messages", as_="RU-MVD", json=body)
    assert response.status_code == 202, response.text
    message_id = str(response.json()["message_id"])
    done = await api.get(f"/v1/messages/{message_id}", as_="RU-MVD", params={"wait": 30})
    assert done.json()["state"] == "receipted", done.text
    return message_id
