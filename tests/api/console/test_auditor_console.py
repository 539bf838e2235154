"""The auditor in a real browser: verifies a range with a progress bar, downloads a proof that
`broker audit check-proof` accepts."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from broker.audit.bundle import check_bundle
from broker.exchange.gateway import Gateway
from tests.api.test_submitting import _proof, death_notice
from tests.cli.test_error_path import BROKER
from tests.support.browser import new_context
from tests.support.console import AUDITOR, StartConsole, receipted, signed_in
from tests.support.exchange import ExchangeHarness

pytestmark = pytest.mark.rabbitmq


async def test_auditor_verifies_a_range_and_downloads_a_proof_check_proof_accepts(
    exchange: ExchangeHarness,
    api_gateways: dict[str, Gateway],
    console_site: StartConsole,
    browser: Browser,
    tmp_path: Path,
) -> None:
    api = await console_site("RU")
    message_id = await receipted(api, death_notice())
    # The receipt is in a signed checkpoint once the API can prove it: then the console can too.
    await exchange.wait_until(
        lambda: _proof(api, message_id), what="a checkpoint covering the receipt", timeout_s=20
    )

    context = await new_context(browser)
    page = await signed_in(context, api, AUDITOR["RU"])
    await expect(page.locator("h1")).to_have_text("Checkpoints")
    await expect(page.locator("#own-checkpoints")).to_contain_text("RU-GW")
    await page.screenshot(path=tmp_path / "auditor-checkpoints.png", full_page=True)

    await page.fill("#first", "0")
    await page.click("#verify")
    await expect(page.locator("#verdict")).to_have_text("verifies", timeout=60_000)
    assert await page.locator("#progress").evaluate("bar => bar.value") == 100
    await expect(page.locator("#summary")).to_contain_text("envelope signatures")
    await expect(page.locator("#finding")).to_have_text("")
    await page.screenshot(path=tmp_path / "auditor-verified.png", full_page=True)

    await page.go_back()
    await page.fill("#proof-message", message_id)
    await page.select_option("#proof-kind", "receipt-received")
    async with page.expect_download() as download_info:
        await page.click("#download-proof")
    proof_file = tmp_path / "console-proof.json"
    await (await download_info.value).save_as(proof_file)

    # The worker's evidence bundle (the sample death notice names passport 400123456).
    await page.fill("#bundle-worker", "400123456")
    async with page.expect_download() as bundle_info:
        await page.click("#download-bundle")
    bundle_file = tmp_path / "evidence.zip"
    await (await bundle_info.value).save_as(bundle_file)
    await context.close()
    checked = check_bundle(bundle_file.read_bytes(), trust=exchange.trust)
    assert {str(entry.draft.message_id) for entry in checked.entries} >= {message_id}

    process = await asyncio.create_subprocess_exec(
        str(BROKER), "audit", "check-proof", str(proof_file), "--keys", str(api.keys_dir),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    assert "OK" in out.decode()
    assert message_id in out.decode()
