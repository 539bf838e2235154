"""Each committed hostile envelope is refused with exactly the reason recorded in index.json.

The assets were generated once by make_assets.py; the trust store is built only from the committed
public CA certificates and CRLs, so these bytes keep meaning the same thing whatever the key store of
the day holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from broker.core.agreement import Agreement
from broker.core.errors import RemoteError
from broker.core.sealing import open_message
from broker.core.trust import TrustStore

HERE = Path(__file__).resolve().parent
INDEX: dict[str, Any] = json.loads((HERE / "index.json").read_text(encoding="utf-8"))
CASES: dict[str, dict[str, Any]] = INDEX["cases"]


@pytest.fixture(scope="module")
def asset_trust() -> TrustStore:
    anchors = {}
    crls = {}
    for pem in sorted((HERE / "ca").glob("*.cert.pem")):
        country = pem.name.split(".")[0]
        anchors[country] = [x509.load_pem_x509_certificate(pem.read_bytes())]
        crls[country] = [x509.load_pem_x509_crl((HERE / "ca" / f"{country}.crl.pem").read_bytes())]
    return TrustStore(anchors=anchors, crls=crls)


def test_index_and_files_agree() -> None:
    on_disk = {path.name for path in (HERE / "envelopes").glob("*")}
    assert on_disk == set(CASES)
    assert sum(1 for case in CASES.values() if case["reason"] is None) >= 1, "keep a control case"


@pytest.mark.parametrize("name", sorted(CASES))
def test_asset_gets_its_exact_reason(name: str, asset_trust: TrustStore, agreement: Agreement) -> None:
    raw = (HERE / "envelopes" / name).read_bytes()
    expected = CASES[name]["reason"]
    local_country = INDEX["local_country"]

    if expected is None:
        opened = open_message(raw, trust=asset_trust, agreement=agreement, local_country=local_country)
        assert opened.raw == raw
        return
    with pytest.raises(RemoteError) as info:
        open_message(raw, trust=asset_trust, agreement=agreement, local_country=local_country)
    assert str(info.value.reason) == expected, info.value.diagnostic
