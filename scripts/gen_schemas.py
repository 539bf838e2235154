"""Write the JSON Schemas, the sample payload files and the sample XML documents of the message catalogue.

    .venv/bin/python scripts/gen_schemas.py

tests/test_schemas.py regenerates both in memory and fails if the committed files drift.
"""

from __future__ import annotations

from pathlib import Path

from broker.core.catalogue import sample_payloads
from broker.core.catalogue.jsonschema import sample_files, schema_files
from broker.core.catalogue.xmlform import payload_to_xml

ROOT = Path(__file__).resolve().parents[1]
JSON_DIR = ROOT / "schemas" / "json"
XML_SAMPLES_DIR = ROOT / "schemas" / "xsd" / "samples"
JSON_SAMPLES_DIR = JSON_DIR / "samples"


def sample_xml_files() -> dict[str, bytes]:
    return {
        f"{payload.MESSAGE_TYPE}-{payload.VERSION}.xml": payload_to_xml(payload)
        for payload in sample_payloads().values()
    }


def main() -> None:
    JSON_DIR.mkdir(parents=True, exist_ok=True)
    XML_SAMPLES_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in schema_files().items():
        (JSON_DIR / name).write_text(text, encoding="utf-8")
        print(JSON_DIR / name)
    JSON_SAMPLES_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in sample_files().items():
        (JSON_SAMPLES_DIR / name).write_text(text, encoding="utf-8")
        print(JSON_SAMPLES_DIR / name)
    for name, document in sample_xml_files().items():
        (XML_SAMPLES_DIR / name).write_bytes(document)
        print(XML_SAMPLES_DIR / name)


if __name__ == "__main__":
    main()
