"""Schemathesis against the live API (both gateways running over the real RabbitMQ), from the committed
contract: every operation, the stateful links from a submission to its status, receipt and proof. No
5xx, every response as the contract says. Bounded and deterministic: a fixed seed, few examples."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from broker.exchange.gateway import Gateway
from tests.support.exchange import ExchangeHarness
from tests.support.http_api import HttpApi

pytestmark = pytest.mark.rabbitmq

CONTRACT = Path(__file__).resolve().parents[2] / "schemas" / "openapi.json"
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "ignored_auth",
)
SEED = 20261202
EXAMPLES_PER_OPERATION = 30
RUN_LIMIT_S = 600.0


async def test_schemathesis_finds_no_failure_in_the_live_api(
    exchange: ExchangeHarness, api_gateways: dict[str, Gateway], http_api: Callable[..., Awaitable[HttpApi]],
    tmp_path: Path,
) -> None:  # fmt: skip
    # The fuzzer is one caller sending hundreds of requests: no rate limit for it here.
    api = await http_api("RU", api_requests_per_s=1e6, api_burst=1_000_000)
    process = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS), "run", str(CONTRACT), "--url", api.url,
        "--header", f"Authorization: Bearer {api.tokens['RU-MVD']}",
        "--checks", ",".join(CHECKS),
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", str(EXAMPLES_PER_OPERATION), "--seed", str(SEED), "--workers", "1",
        "--request-timeout", "60", "--suppress-health-check", "all", "--output-sanitize", "false",
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), RUN_LIMIT_S)
    text = output.decode(errors="replace")

    assert process.returncode == 0, text[-8000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", text)
    assert generated is not None, text[-3000:]
    assert int(generated.group(1)) == int(generated.group(2)) > 100
    assert "8 selected / 8 total" in text  # every operation of the contract
    links = re.search(r"API Links:\s+(\d+) covered", text)
    assert links is not None, text[-3000:]
    assert int(links.group(1)) >= 1  # the stateful phase followed a submission to its status
    assert await api_gateways["RU"].outbox.records()  # and a submission got through to the gateway
