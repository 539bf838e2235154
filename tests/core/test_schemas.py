"""JSON Schema and XSD: committed files match the models, samples validate, broken samples do not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lxml import etree
from pydantic import BaseModel

from broker.core.catalogue import CATALOGUE, parse_payload, payload_to_json, sample_payloads
from broker.core.catalogue.jsonschema import sample_files, schema_files
from broker.core.catalogue.receipt import ReceiptBatch, UnreadableLine
from broker.core.catalogue.xmlform import hardened_parser, namespace, parse_payload_xml, payload_to_xml
from broker.core.errors import Reason, ValidationError

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
JSON_DIR = SCHEMAS / "json"
XSD_DIR = SCHEMAS / "xsd"
SAMPLES_DIR = XSD_DIR / "samples"
XS = "{http://www.w3.org/2001/XMLSchema}"
TYPES = sorted(message_type for message_type, _ in CATALOGUE)
REGENERATE = "run `.venv/bin/python scripts/gen_schemas.py` and commit the result"


def load_xsd(message_type: str) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(XSD_DIR / f"{message_type}-1.xsd"), hardened_parser()))


def sample_tree(message_type: str) -> etree._ElementTree:
    return etree.parse(str(SAMPLES_DIR / f"{message_type}-1.xml"), hardened_parser())


def q(message_type: str, local: str) -> str:
    return f"{{{namespace(message_type, 1)}}}{local}"


# --- JSON Schema --------------------------------------------------------------------------------


def test_committed_json_schemas_match_the_models() -> None:
    expected = schema_files()
    committed = {path.name: path.read_text(encoding="utf-8") for path in JSON_DIR.glob("*.schema.json")}
    assert sorted(committed) == sorted(expected), REGENERATE
    for name, text in expected.items():
        assert committed[name] == text, f"{name} drifted from the model: {REGENERATE}"


@pytest.mark.parametrize("message_type", TYPES)
def test_json_schema_is_closed_and_names_the_required_fields(message_type: str) -> None:
    schema = json.loads((JSON_DIR / f"{message_type}-1.schema.json").read_text(encoding="utf-8"))
    cls = CATALOGUE[(message_type, 1)]
    assert schema["$id"] == f"urn:labour-exchange:{message_type}:1"
    assert schema["additionalProperties"] is False
    assert schema["x-personal-data"] is cls.PERSONAL
    assert list(schema["properties"]) == list(cls.model_fields)
    required = [name for name, field in cls.model_fields.items() if field.is_required()]
    assert schema["required"] == required
    # Every key of the sample's JSON form is a property the schema knows.
    assert set(payload_to_json(sample_payloads()[message_type])) <= set(schema["properties"])


# --- XSD and samples ----------------------------------------------------------------------------


@pytest.mark.parametrize("message_type", TYPES)
def test_sample_validates_against_its_xsd(message_type: str) -> None:
    schema = load_xsd(message_type)
    tree = sample_tree(message_type)
    assert schema.validate(tree), schema.error_log
    assert tree.getroot().tag == q(message_type, "payload")


def test_committed_sample_payload_files_are_the_samples_and_parse_back() -> None:
    expected = sample_files()
    committed = {
        path.name: path.read_text(encoding="utf-8") for path in (JSON_DIR / "samples").glob("*.json")
    }
    assert committed == expected, REGENERATE
    for name, text in committed.items():
        message_type, _, version = name.removesuffix(".json").rpartition("-")
        assert (
            parse_payload(message_type, int(version), text.encode("utf-8")) == sample_payloads()[message_type]
        )


@pytest.mark.parametrize("message_type", TYPES)
def test_committed_sample_is_the_rendered_sample_payload(message_type: str) -> None:
    committed = (SAMPLES_DIR / f"{message_type}-1.xml").read_bytes()
    assert committed == payload_to_xml(sample_payloads()[message_type]), REGENERATE


@pytest.mark.parametrize("message_type", TYPES)
def test_sample_xml_reads_back_to_the_sample_payload(message_type: str) -> None:
    committed = (SAMPLES_DIR / f"{message_type}-1.xml").read_bytes()
    assert parse_payload_xml(message_type, 1, committed) == sample_payloads()[message_type]


def _nested_models(cls: type[BaseModel], seen: dict[str, type[BaseModel]]) -> dict[str, type[BaseModel]]:
    seen[cls.__name__] = cls
    for field in cls.model_fields.values():
        for candidate in _types_in(field.annotation):
            if candidate.__name__ not in seen:
                _nested_models(candidate, seen)
    return seen


def _types_in(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in getattr(annotation, "__args__", ()):
        found.extend(_types_in(arg))
    return found


def _complex_types() -> dict[str, list[str]]:
    """Every named complexType of every XSD, as the list of its element names."""
    types: dict[str, list[str]] = {}
    for path in XSD_DIR.glob("*.xsd"):
        for complex_type in etree.parse(str(path), hardened_parser()).iter(f"{XS}complexType"):
            elements = [element.get("name", "") for element in complex_type.iter(f"{XS}element")]
            types[complex_type.get("name", "")] = elements
    return types


def test_every_model_has_a_complex_type_with_the_same_fields_in_order() -> None:
    models: dict[str, type[BaseModel]] = {}
    for cls in CATALOGUE.values():
        _nested_models(cls, models)
    complex_types = _complex_types()
    for name, model in models.items():
        assert name in complex_types, f"no complexType {name} for the model"
        assert complex_types[name] == list(model.model_fields), f"complexType {name} differs from the model"


# --- broken samples -----------------------------------------------------------------------------


def _broken(message_type: str, path: str, change: str) -> etree._ElementTree:
    """The sample with the element at `path` (slash-separated local names) removed, emptied or bad."""
    tree = sample_tree(message_type)
    element = tree.getroot()
    for step in path.split("/"):
        found = element.find(q(message_type, step))
        assert found is not None, path
        element = found
    if change == "remove":
        parent = element.getparent()
        assert parent is not None
        parent.remove(element)
    elif change == "duplicate":
        element.addnext(etree.fromstring(etree.tostring(element)))
    else:
        element.text = change
    return tree


@pytest.mark.parametrize(
    ("message_type", "path", "change"),
    [
        ("worker.death", "worker/citizenship", "tj"),
        ("worker.death", "worker/surname_cyrillic", "Rakhimov"),
        ("worker.death", "category", "d"),
        ("worker.death", "work_related", "yes"),
        ("worker.death", "registration_address", "remove"),
        ("work_permit.cancellation", "departure_deadline", "2025-02-25+03:00"),
        ("work_permit.cancellation", "reason", "art12_1"),
        ("work_permit.cancellation", "permit/number", "remove"),
        ("legislation.change", "areas/item", "duplicate"),
        ("legislation.change", "document/sha256", "XYZ"),
        ("labour_market.report", "regions/item", "duplicate"),
        ("labour_market.report", "indicators/item/value", "-5"),
        ("employer.permit", "quota", "0"),
        ("recruitment_agency.license", "agency/region", "Moscow"),
        ("receipt", "received_at", "2025-01-17T09:30:12"),
        ("receipt", "received_at", "2025-01-17T12:30:12+03:00"),
        ("receipt", "message_id", "not-a-uuid"),
        ("receipt", "audit_index", "9007199254740992"),
    ],
)
def test_broken_sample_fails_its_xsd(message_type: str, path: str, change: str) -> None:
    schema = load_xsd(message_type)
    assert not schema.validate(_broken(message_type, path, change))


def test_unknown_element_fails_the_xsd_and_the_model() -> None:
    tree = sample_tree("employer.permit")
    extra = etree.SubElement(tree.getroot(), q("employer.permit", "bribe"))
    extra.text = "1"
    assert not load_xsd("employer.permit").validate(tree)
    with pytest.raises(ValidationError) as caught:
        parse_payload_xml("employer.permit", 1, etree.tostring(tree))
    assert caught.value.reason is Reason.SCHEMA_INVALID
    assert "bribe" in caught.value.diagnostic


def test_sample_in_another_types_namespace_fails() -> None:
    document = (SAMPLES_DIR / "employer.permit-1.xml").read_bytes()
    assert not load_xsd("recruitment_agency.license").validate(etree.fromstring(document, hardened_parser()))
    with pytest.raises(ValidationError) as caught:
        parse_payload_xml("recruitment_agency.license", 1, document)
    assert caught.value.reason is Reason.SCHEMA_INVALID


def test_agreement_rules_apply_to_the_xml_form_too() -> None:
    tree = _broken("work_permit.cancellation", "departure_deadline", "2025-02-24")
    assert load_xsd("work_permit.cancellation").validate(tree)  # the XSD cannot say Art. 14
    with pytest.raises(ValidationError) as caught:
        parse_payload_xml("work_permit.cancellation", 1, etree.tostring(tree))
    assert caught.value.reason is Reason.AGREEMENT_RULE
    assert caught.value.article == "14"


# --- hostile XML --------------------------------------------------------------------------------


def test_external_entity_is_never_resolved(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET", encoding="utf-8")
    document = (
        f'<?xml version="1.0"?><!DOCTYPE payload [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>'
        '<payload xmlns="urn:labour-exchange:employer.permit:1"><permit_number>&xxe;</permit_number>'
        "</payload>"
    ).encode()
    root = etree.fromstring(document, hardened_parser())
    assert b"TOP-SECRET" not in etree.tostring(root)
    with pytest.raises(ValidationError) as caught:
        parse_payload_xml("employer.permit", 1, document)
    assert caught.value.reason is Reason.MESSAGE_MALFORMED


def test_entity_expansion_bomb_is_refused() -> None:
    entities = "".join(f'<!ENTITY e{i} "{f"&e{i - 1};" * 10}">' for i in range(1, 8))
    document = (
        f'<?xml version="1.0"?><!DOCTYPE payload [<!ENTITY e0 "ha">{entities}]>'
        '<payload xmlns="urn:labour-exchange:employer.permit:1"><permit_number>&e7;</permit_number>'
        "</payload>"
    ).encode()
    with pytest.raises(ValidationError) as caught:
        parse_payload_xml("employer.permit", 1, document)
    assert caught.value.reason is Reason.MESSAGE_MALFORMED


def test_malformed_xml_is_wrapped() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_payload_xml("receipt", 1, b"<payload><unclosed></payload>")
    assert caught.value.reason is Reason.MESSAGE_MALFORMED


def test_a_receipt_answering_only_unreadable_bodies_validates_and_reads_back_from_xml() -> None:
    sample = sample_payloads()["receipt.batch"]
    assert isinstance(sample, ReceiptBatch)
    batch = ReceiptBatch(
        received_at=sample.received_at,
        checkpoint=sample.checkpoint,
        lines=(),
        unreadable=(UnreadableLine(sha256="cd" * 32, reason="message.oversized", audit_index=2),),
    )
    document = payload_to_xml(batch)
    schema = load_xsd("receipt.batch")
    assert schema.validate(etree.fromstring(document, hardened_parser())), schema.error_log
    assert parse_payload_xml("receipt.batch", 1, document) == batch
