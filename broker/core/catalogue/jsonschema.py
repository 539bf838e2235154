"""JSON Schema (draft 2020-12) of every catalogue entry, generated from the models.

The rules of the agreement are checked in code and cannot be said in JSON Schema; a payload that
fits the schema may still be refused with `agreement.rule`. Run as
`scripts/gen_schemas.py` to write the files; this module only computes their text.
"""

from __future__ import annotations

import json
from typing import Any

from broker.core.catalogue import CATALOGUE
from broker.core.catalogue.base import Payload

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_id(message_type: str, version: int) -> str:
    return f"urn:labour-exchange:{message_type}:{version}"


def schema_for(cls: type[Payload]) -> dict[str, Any]:
    body = cls.model_json_schema(mode="validation")
    return {
        "$schema": DIALECT,
        "$id": schema_id(cls.MESSAGE_TYPE, cls.VERSION),
        "title": f"{cls.MESSAGE_TYPE} v{cls.VERSION}",
        "x-personal-data": cls.PERSONAL,
        **{key: value for key, value in body.items() if key != "title"},
    }


def schema_files() -> dict[str, str]:
    """File name to file text, for every message type and version."""
    return {
        f"{message_type}-{version}.schema.json": json.dumps(schema_for(cls), indent=2, ensure_ascii=False)
        + "\n"
        for (message_type, version), cls in sorted(CATALOGUE.items())
    }


def sample_files() -> dict[str, str]:
    """File name to file text: the sample payload of every type, as a payload file `broker send` takes."""
    from broker.core.catalogue import payload_to_json, sample_payloads  # noqa: PLC0415 - samples import us

    return {
        f"{payload.MESSAGE_TYPE}-{payload.VERSION}.json": json.dumps(
            payload_to_json(payload), indent=2, ensure_ascii=False
        )
        + "\n"
        for payload in sample_payloads().values()
    }
