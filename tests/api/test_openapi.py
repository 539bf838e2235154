"""The OpenAPI document generated from the code is the one committed under schemas/."""

from __future__ import annotations

import json
from pathlib import Path

from broker.api.app import openapi_document

COMMITTED = Path(__file__).resolve().parents[2] / "schemas" / "openapi.json"


def test_the_committed_openapi_document_is_what_the_code_generates() -> None:
    generated = openapi_document()

    assert generated == COMMITTED.read_text("utf-8"), (
        "schemas/openapi.json drifted from the code: run `broker api openapi > schemas/openapi.json` "
        "and commit it (a contract change ministries' clients must hear about)"
    )


def test_the_contract_links_submissions_to_their_status_receipt_and_proof() -> None:
    document = json.loads(COMMITTED.read_text("utf-8"))
    operations = {op["operationId"]: op for path in document["paths"].values() for op in path.values()}
    links = operations["submit_message"]["responses"]["202"]["links"]

    assert {link["operationId"] for link in links.values()} == {"get_message", "get_receipt", "get_proof"}
    assert all(link["operationId"] in operations for link in links.values())
    for operation in operations.values():
        problems = [r for status, r in operation["responses"].items() if status.startswith(("4", "5"))]
        assert problems, operation["operationId"]
        for response in problems:
            assert list(response["content"]) == ["application/problem+json"]
