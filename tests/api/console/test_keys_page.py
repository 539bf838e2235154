"""The operator's keys page: what expires within 30 days, and revocations, from the key store."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from broker.exchange.gateway import Gateway
from broker.state.keystore import KeyStore
from tests.support.console import OPERATOR, StartConsole
from tests.support.exchange import ExchangeHarness

pytestmark = pytest.mark.rabbitmq


async def test_the_keys_page_shows_what_expires_within_30_days_and_what_was_revoked(
    exchange: ExchangeHarness, api_gateways: dict[str, Gateway], console_site: StartConsole, tmp_path: Path
) -> None:
    keys = tmp_path / "console-keys"
    shutil.copytree(exchange.dev.settings["TJ"].keys_dir, keys)  # the session's store stays as it is
    store = KeyStore(root=keys)
    now = datetime.now(UTC)
    store.rotate("TJ-MVD", now=now, validity_days=10)  # a certificate that runs out soon
    revoked = store.revoke("TJ-CONSULATE-MOSCOW", now=now)  # its signing and key-agreement certificates
    assert revoked
    tj = await console_site("TJ", keys_dir=keys)

    page = await tj.get("/console/operator/keys", as_=OPERATOR["TJ"])

    assert page.status_code == 200
    expiring = page.text.split('id="expiring"', 1)[1].split("</ul>", 1)[0]
    assert "TJ-MVD" in expiring
    assert "TJ-GW" not in expiring
    revocations = page.text.split('id="revocations"', 1)[1].split("</table>", 1)[0]
    for serial in revoked:
        assert re.search(rf"TJ-CONSULATE-MOSCOW</td><td class=\"code\">{serial:x}</td>", revocations)
    assert "TJ-MVD" not in revocations
