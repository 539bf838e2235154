"""The operator in a real browser: the overview, a rejected message found and read, then requeued."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import pytest
from playwright.async_api import Browser, expect

from broker.audit.entry import EntryKind
from broker.core.sealing import SealedMessage
from broker.exchange.gateway import Gateway
from broker.exchange.topology import INBOUND
from tests.api.test_submitting import death_notice
from tests.support.browser import new_context
from tests.support.console import OPERATOR, StartConsole, receipted, signed_in
from tests.support.exchange import ExchangeHarness
from tests.support.http_api import sealed_by

pytestmark = pytest.mark.rabbitmq


def forged(sealed: SealedMessage) -> bytes:
    """The envelope with one character of its signature changed: `signature.invalid` at the receiver."""
    raw = sealed.raw
    start = raw.index(b'"signature":"') + len(b'"signature":"')
    middle = raw.index(b'"', start) - 10  # inside the signature's last part
    swapped = b"A" if raw[middle : middle + 1] != b"A" else b"B"
    return raw[:middle] + swapped + raw[middle + 1 :]


async def rejected_count(gateway: Gateway, message_id: str) -> int:
    return len(await gateway.audit.find(UUID(message_id), kinds=[EntryKind.REJECTED]))


async def test_operator_opens_the_overview_finds_a_rejected_message_reads_its_reason_and_requeues_it(
    exchange: ExchangeHarness,
    api_gateways: dict[str, Gateway],
    console_site: StartConsole,
    browser: Browser,
    tmp_path: Path,
) -> None:
    api = await console_site("RU")
    sent_id = await receipted(api, death_notice())
    sealed = sealed_by(exchange, "employer.permit", sender="TJ-MOL", recipient="RU-MINTRUD")
    bad_id = str(sealed.envelope.id)
    await exchange.broker["RU"].publish(
        exchange=INBOUND, routing_key="ru", body=forged(sealed), message_id=bad_id
    )
    await exchange.wait_until(lambda: _quarantined(exchange, bad_id), what="the forgery in RU's quarantine")

    context = await new_context(browser)
    page = await signed_in(context, api, OPERATOR["RU"])

    # The overview: readiness from the gateway's /readyz, queue depths, the chart, the oldest waiting.
    await expect(page.locator("h1")).to_have_text("Overview")
    await expect(page.locator("#readiness")).to_have_text("ready")
    await expect(page.locator("#checks")).to_contain_text("peer_link")
    await expect(page.locator("#depths")).to_contain_text("quarantine")
    assert await page.locator("svg.chart rect title", has_text="worker.death receipted: 1").count() == 1
    await page.screenshot(path=tmp_path / "operator-overview.png", full_page=True)

    # The sent message, filtered by state, with its trail and receipt.
    await page.click("text=Messages")
    await page.select_option("#state", "receipted")
    await page.click("#filter")
    await page.click(f"text={sent_id}")
    await expect(page.locator("#state")).to_have_text("receipted")
    await expect(page.locator("#trail")).to_contain_text("receipt-received")
    await expect(page.locator("#receipt")).to_contain_text("accepted")

    # The rejected message, its reason code and the words for it from docs/reason-codes.md.
    await page.click("text=Quarantine")
    await expect(page.locator("#quarantine")).to_contain_text("signature.invalid")
    await page.click(f"text={bad_id}")
    await expect(page.locator("#reason")).to_contain_text(
        "signature.invalid: The detached JWS does not verify"
    )
    await expect(page.locator("#reason-action")).to_contain_text("Treat as possible tampering")
    await page.screenshot(path=tmp_path / "operator-quarantined.png", full_page=True)

    # Requeue: confirmed twice (the box and the browser's dialog), then recorded with who did it.
    before = await rejected_count(api_gateways["RU"], bad_id)
    page.once("dialog", lambda dialog: dialog.accept())
    await page.check("#confirm-requeue")
    await page.click("#requeue")
    await expect(page.locator("#done")).to_have_text("Requeued")
    await expect(page.locator("#actions")).to_contain_text("quarantine.requeue")
    await expect(page.locator("#actions")).to_contain_text(bad_id)
    await expect(page.locator("#actions")).to_contain_text(OPERATOR["RU"])
    # The gateway took it again, judged it again (still forged) and quarantined it again.
    await exchange.wait_until(
        lambda: _more(api_gateways["RU"], bad_id, before), what="the requeued message judged again"
    )
    await page.screenshot(path=tmp_path / "operator-requeued.png", full_page=True)

    # Keys: the certificates of both countries with their validity.
    await page.click("text=Keys")
    for holder in ("RU-GW", "TJ-GW", "RU-MVD", "TJ-MOL"):
        await expect(page.locator("#certificates")).to_contain_text(holder)
    await expect(page.locator("#certificates")).to_contain_text("valid")
    await context.close()


async def _quarantined(exchange: ExchangeHarness, message_id: str) -> bool | None:
    messages = await exchange.broker["RU"].peek("quarantine", limit=100)
    return True if any(m.message_id == message_id for m in messages) else None


async def _more(gateway: Gateway, message_id: str, before: int) -> bool | None:
    return True if await rejected_count(gateway, message_id) > before else None
