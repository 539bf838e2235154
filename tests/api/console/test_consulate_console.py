"""The consulate in a real browser: exactly its nationals' alerts, newest first, one marked handled."""

from __future__ import annotations

import copy
import csv
import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from broker.core.catalogue import payload_to_json, sample_payloads
from broker.exchange.gateway import Gateway
from tests.support.browser import new_context
from tests.support.console import CONSULATE, StartConsole, receipted, signed_in
from tests.support.exchange import ExchangeHarness

pytestmark = pytest.mark.rabbitmq


def cancellation(days_ago: int) -> dict[str, Any]:
    payload: Any = payload_to_json(sample_payloads()["work_permit.cancellation"])
    decided = datetime.now(UTC).date() - timedelta(days=days_ago)
    payload["decision_date"] = decided.isoformat()
    payload["departure_deadline"] = (decided + timedelta(days=15)).isoformat()  # Art. 14
    payload["permit"]["issue_date"] = (decided - timedelta(days=100)).isoformat()
    payload["permit"]["expiry_date"] = (decided + timedelta(days=200)).isoformat()
    return {"type": "work_permit.cancellation", "to": "TJ-MOL", "payload": payload}


def death(citizenship: str = "TJ") -> dict[str, Any]:
    payload: Any = copy.deepcopy(payload_to_json(sample_payloads()["worker.death"]))
    payload["worker"]["citizenship"] = citizenship
    payload["compensation_office"]["located_in"] = citizenship
    return {"type": "worker.death", "to": "TJ-MOL", "payload": payload}


async def test_consulate_sees_exactly_its_nationals_alerts_and_marks_one_handled(
    exchange: ExchangeHarness,
    api_gateways: dict[str, Gateway],
    console_site: StartConsole,
    browser: Browser,
    tmp_path: Path,
) -> None:
    ru = await console_site("RU")
    death_id = await receipted(ru, death())
    cancel_id = await receipted(ru, cancellation(days_ago=12))  # 3 days left to leave
    foreigner_id = await receipted(ru, death("UZ"))  # a national of a third country: not this consulate's
    tj = await console_site("TJ")

    context = await new_context(browser)
    page = await signed_in(context, tj, CONSULATE["TJ"])
    await expect(page.locator("h1")).to_contain_text("Alerts about nationals of TJ")
    rows = page.locator("#alerts tr.alert")
    # Exactly its alerts, newest first: the permit cancellation, then the death notice.
    assert [await row.get_attribute("data-message") for row in await rows.all()] == [cancel_id, death_id]
    assert foreigner_id not in await page.content()
    cancelled = page.locator(f'tr[data-message="{cancel_id}"]')
    await expect(cancelled.locator(".days-left")).to_have_text("3 days left")
    await expect(cancelled).to_have_class(re.compile(r"\burgent\b"))
    dead = page.locator(f'tr[data-message="{death_id}"]')
    await expect(dead).not_to_have_class(re.compile(r"\burgent\b"))
    await expect(dead.locator(".responsible")).to_have_text("the host-state employer (Art. 15.3)")
    await expect(dead).to_contain_text("Раҳимов Фаррух Давлатович (RAKHIMOV FARRUKH)")
    await page.screenshot(path=tmp_path / "consulate-alerts.png", full_page=True)

    await dead.locator("button.mark-handled").click()
    handled = page.locator(f'tr[data-message="{death_id}"] .handled-mark')
    await expect(handled).to_contain_text(f"{CONSULATE['TJ']}/")
    await expect(page.locator(f'tr[data-message="{cancel_id}"] button.mark-handled')).to_be_visible()
    await page.screenshot(path=tmp_path / "consulate-handled.png", full_page=True)

    # The same page in Russian and Tajik: labels from the one catalogue, codes unchanged.
    await page.goto(f"{tj.url}/console/consulate?lang=ru")
    await expect(page.locator("h1")).to_contain_text("Оповещения о гражданах TJ")
    await expect(dead.locator(".responsible")).to_have_text(
        "работодатель государства трудоустройства (ст. 15.3)"
    )
    await page.goto(f"{tj.url}/console/consulate?lang=tg")
    await expect(page.locator("h1")).to_contain_text("Огоҳиҳо дар бораи шаҳрвандони TJ")
    await expect(cancelled.locator(".days-left")).to_have_text("3 рӯз монд")
    await page.screenshot(path=tmp_path / "consulate-tg.png", full_page=True)

    async with page.expect_download() as download_info:
        await page.click("#export")
    exported = (await (await download_info.value).path()).read_text(encoding="utf-8-sig")
    table = list(csv.DictReader(io.StringIO(exported)))
    assert [row["message_id"] for row in table] == [cancel_id, death_id]
    assert table[1]["handled_at"]
    assert not table[0]["handled_at"]
    await context.close()
