"""Fixtures for tests of the HTTP API: both gateways running, and each country's API served for real.

`http_api(country)` starts the API of `country` on a free port of 127.0.0.1 (uvicorn, in this test's
event loop) beside the gateways of the `gateways`-like fixture `api_gateways`, with a token for every
authority of that country and the passwords `topology apply` would keep. Everything is stopped when
the test ends.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio

from broker.api.server import serving
from broker.core.catalogue import sample_payloads
from broker.core.sealing import SealedMessage, seal
from broker.exchange.devkit import write_settings_file
from broker.exchange.gateway import Gateway
from broker.state.api_tokens import TokenFile
from broker.state.settings import ExchangeSettings
from tests.support.exchange import COUNTRIES, ExchangeHarness

# Checkpoints this often, so a proof of a fresh receipt can be asked for within a test.
CHECKPOINT_EVERY_S = 0.5


@dataclass
class HttpApi:
    country: str
    url: str
    settings: ExchangeSettings
    tokens: dict[str, str]
    client: httpx.AsyncClient
    config_file: Path
    keys_dir: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def auth(self, authority: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[authority]}"}

    async def get(self, path: str, *, as_: str, **kwargs: Any) -> httpx.Response:
        return await self.client.get(path, headers=self.auth(as_), **kwargs)

    async def post(
        self, path: str, *, as_: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        return await self.client.post(path, headers={**self.auth(as_), **(headers or {})}, **kwargs)


def sealed_by(exchange: ExchangeHarness, message_type: str, *, sender: str, recipient: str) -> SealedMessage:
    """An envelope of the sample payload that `sender` signed itself, now (a ministry sealing its own)."""
    moment = datetime.now(UTC)
    return seal(
        sample_payloads()[message_type],
        sender=sender,
        recipient=recipient,
        signer=exchange.dev.keystore.signer(sender, at=moment),
        created_at=moment,
    )


def api_settings(
    exchange: ExchangeHarness, country: str, tmp_path: Path, **overrides: Any
) -> ExchangeSettings:
    secrets = tmp_path / "rabbitmq-secrets.json"
    if not secrets.exists():
        secrets.write_text(json.dumps(exchange.dev.passwords), encoding="utf-8")
        secrets.chmod(0o600)  # as `topology apply` keeps it: a gateway refuses one others may read
    return exchange.settings(
        country,
        secrets_file=secrets,
        checkpoint_every_s=CHECKPOINT_EVERY_S,
        api_address="127.0.0.1",
        **overrides,
    )


def issue_tokens(settings: ExchangeSettings, exchange: ExchangeHarness) -> dict[str, str]:
    tokens = TokenFile(settings.api_tokens_path)
    return {
        authority.id: tokens.issue(authority.id, now=datetime.now(UTC))[0]
        for authority in exchange.dev.agreement.authorities
        if authority.country == settings.country
    }


@pytest_asyncio.fixture
async def api_gateways(exchange: ExchangeHarness) -> dict[str, Gateway]:
    """Both gateways, running, checkpointing often enough for proofs within a test."""
    return {
        country: await exchange.new_gateway(country, checkpoint_every_s=CHECKPOINT_EVERY_S)
        for country in COUNTRIES
    }


@pytest_asyncio.fixture
async def http_api(
    exchange: ExchangeHarness, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[HttpApi]]]:
    """`await http_api("RU", **setting_overrides)`: that country's API, served until the test ends."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(country: str, **overrides: Any) -> HttpApi:
            settings = api_settings(exchange, country, tmp_path, **overrides)
            tokens = issue_tokens(settings, exchange)
            port = await stack.enter_async_context(serving(settings, port=0))
            url = f"http://127.0.0.1:{port}"
            client = await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=60.0))
            config_file = tmp_path / f"{country.lower()}-api.toml"
            write_settings_file(config_file, settings)
            return HttpApi(
                country=country,
                url=url,
                settings=settings,
                tokens=tokens,
                client=client,
                config_file=config_file,
                keys_dir=settings.keys_dir,
            )

        yield start
