"""A third agreement needs a TOML file and keys, no code (issue 20): a made-up KG-KZ agreement loaded
from a temporary folder, and an exchange run under it over the real RabbitMQ."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path

import pytest

from broker.audit import EntryKind
from broker.core.agreement import load_agreement, shipped_agreement_ids
from broker.core.catalogue.receipt import Verdict
from broker.core.envelope import sha256_hex
from broker.core.errors import LocalError, Reason
from tests.support.countries import WAIT_S, Countries, provisioned, sample

pytestmark = pytest.mark.rabbitmq

# -- a third agreement is a file and keys -----------------------------------------------------------

MADE_UP = """
id = "kg-kz-2030"
title = "A made-up KG-KZ agreement on labour-market reports"
countries = ["KZ", "KG"]
clause = "Art."

[[period]]
from = 2025-01-01
until = 2099-12-31
basis = "made up for a test"

[[authority]]
id = "KZ-ENBEK"
country = "KZ"
roles = ["competent_ministry"]
name = "A Kazakh ministry"

[[authority]]
id = "KZ-GW"
country = "KZ"
roles = ["gateway"]
name = "Kazakh gateway"

[[authority]]
id = "KZ-CA"
country = "KZ"
roles = ["ca"]
name = "Kazakh CA"

[[authority]]
id = "KG-MINTRUD"
country = "KG"
roles = ["competent_ministry"]
name = "A Kyrgyz ministry"

[[authority]]
id = "KG-GW"
country = "KG"
roles = ["gateway"]
name = "Kyrgyz gateway"

[[authority]]
id = "KG-CA"
country = "KG"
roles = ["ca"]
name = "Kyrgyz CA"

[[rule]]
type = "labour_market.report"
article = "4"
from = ["competent_ministry"]
to = ["competent_ministry"]
subscribers = ["competent_ministry"]

[[rule]]
type = "receipt.batch"
article = "exchange protocol"
from = ["gateway"]
to = ["gateway"]

[[rule]]
type = "checkpoint.witness"
article = "exchange protocol"
from = ["gateway"]
to = ["gateway"]
"""


async def test_a_third_agreement_needs_a_file_and_keys_and_no_code(tmp_path: Path) -> None:
    path = tmp_path / "agreements" / "kg-kz-2030.toml"
    path.parent.mkdir()
    path.write_text(MADE_UP, encoding="utf-8")
    assert "kg-kz-2030" not in shipped_agreement_ids()
    assert load_agreement(path).periods[0].start == date(2025, 1, 1)
    dev = await asyncio.to_thread(provisioned, tmp_path / "exchange", [str(path)])
    held = Countries(dev, tmp_path / "state")
    try:
        kz, kg = await held.gateway("KZ"), await held.gateway("KG")
        report = await kz.send(
            sample("labour_market.report"), to="KG-MINTRUD", wait_receipt=True, receipt_timeout_s=WAIT_S
        )
        assert report.receipt is not None
        assert report.receipt.verdict == Verdict.ACCEPTED
        with pytest.raises(LocalError) as refused:
            await kz.send(sample("legislation.change"), to="KG-MINTRUD")
        assert refused.value.reason == Reason.POLICY_TYPE_NOT_COVERED
        assert "kg-kz-2030" in refused.value.diagnostic
        [received] = await kg.audit.find(report.message_id, kinds=[EntryKind.RECEIVED])
        assert sha256_hex(received.envelope) == report.sha256  # the very bytes KZ sent
    finally:
        await held.close()
        await asyncio.to_thread(dev.teardown)
