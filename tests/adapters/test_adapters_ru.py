"""The Russian adapter: XML documents checked by XSD under a hardened parser, and the way back.

Hostile documents (XXE, billion laughs, external DTD, oversized, wrong namespace, wrong encoding)
must each fail with their reason code and `file:line`, land in failed/ with a reason file, and send
nothing.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from lxml import etree

from adapters.base import MAX_FILE_BYTES, AdapterError, NationalAdapter
from adapters.folder_drop import FolderDrop
from adapters.pipeline import import_bytes, import_file, load_adapter
from adapters.ru import RussianAdapter
from adapters.ru.parse import xsd_for
from broker.core.catalogue import Payload, sample_payloads
from broker.core.catalogue.xmlform import hardened_parser
from broker.core.errors import Reason

SAMPLES = Path(__file__).resolve().parents[2] / "adapters" / "ru" / "samples"
RU = RussianAdapter()


class RecordingSender:
    """Stands in for a gateway: records what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[tuple[Payload, str, str | None]] = []

    async def send(
        self, payload: Payload, *, to: str, sender: str | None = None, wait_receipt: bool = False
    ) -> RecordingSender.Result:
        self.sent.append((payload, to, sender))
        return RecordingSender.Result(message_id=uuid.uuid4())

    class Result:
        def __init__(self, *, message_id: uuid.UUID) -> None:
            self.message_id = message_id


def sample_files() -> list[Path]:
    return sorted(SAMPLES.glob("*.xml"))


def employer_permit_xml() -> bytes:
    return RU.render(sample_payloads()["employer.permit"])


def refused(data: bytes, filename: str = "doc.xml") -> AdapterError:
    with pytest.raises(AdapterError) as caught:
        RU.parse(data, filename=filename)
    return caught.value


def test_the_adapter_has_the_shared_shape(tmp_path: Path) -> None:
    adapter = load_adapter("ru", state_dir=tmp_path)
    assert isinstance(adapter, NationalAdapter)
    assert adapter.country == "RU"
    assert "worker.death" in adapter.supported_types
    assert "receipt" not in adapter.supported_types


def test_there_is_a_sample_of_every_type() -> None:
    types = {RU.parse(path.read_bytes(), filename=path.name)[0].MESSAGE_TYPE for path in sample_files()}
    assert types == RU.supported_types


@pytest.mark.parametrize("path", sample_files(), ids=lambda path: path.name)
def test_every_sample_is_valid_against_its_xsd_and_renders_back_the_same(path: Path) -> None:
    data = path.read_bytes()
    [payload] = RU.parse(data, filename=path.name)
    tree = etree.fromstring(data, hardened_parser())
    assert xsd_for(payload.MESSAGE_TYPE, payload.VERSION).validate(tree)
    assert RU.render(payload, fmt="xml") == data
    assert RU.parse(RU.render(payload), filename="again.xml") == [payload]


def test_the_2013_protocol_sample_carries_the_amended_article_4() -> None:
    [change] = RU.parse((SAMPLES / "legislation.change-2013-protocol.xml").read_bytes(), filename="p.xml")
    assert change.model_dump()["adoption_date"].isoformat() == "2013-10-29"
    assert "не более чем на три года" in change.model_dump()["summary"]


XXE = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE payload [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<payload xmlns="urn:labour-exchange:employer.permit:1"><permit_number>&secret;</permit_number></payload>
"""
BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<payload xmlns="urn:labour-exchange:employer.permit:1">&lol4;</payload>
"""
EXTERNAL_DTD = b"""<?xml version="1.0" encoding="UTF-8"?>

<!DOCTYPE payload SYSTEM "http://127.0.0.1:9/evil.dtd">
<payload xmlns="urn:labour-exchange:employer.permit:1"/>
"""


@pytest.mark.parametrize(
    ("name", "document", "line"),
    [("xxe", XXE, 2), ("billion-laughs", BILLION_LAUGHS, 2), ("external-dtd", EXTERNAL_DTD, 3)],
)
def test_any_dtd_is_refused_before_parsing(name: str, document: bytes, line: int) -> None:
    error = refused(document, f"{name}.xml")
    assert error.reason == Reason.MESSAGE_MALFORMED
    assert (error.filename, error.line) == (f"{name}.xml", line)
    assert "document type declaration" in error.diagnostic
    assert error.diagnostic.startswith(f"{name}.xml:{line}: ")


def test_an_oversized_document_is_refused_before_parsing() -> None:
    body = employer_permit_xml()
    padding = b"<!-- " + b"x" * 100 + b" -->\n"
    document = body + padding * (MAX_FILE_BYTES // len(padding) + 1)
    error = refused(document, "big.xml")
    assert error.reason == Reason.MESSAGE_OVERSIZED
    assert error.line > body.count(b"\n")  # where the limit was crossed


def test_a_root_in_a_foreign_namespace_is_no_message_type() -> None:
    document = employer_permit_xml().replace(
        b"urn:labour-exchange:employer.permit:1", b"urn:ru:mvd:smev:permit:1.0"
    )
    error = refused(document)
    assert error.reason == Reason.ADAPTER_INVALID
    assert error.line == 2
    assert "urn:ru:mvd:smev:permit:1.0" in error.diagnostic


def test_windows_1251_bytes_under_a_utf8_declaration_name_their_line() -> None:
    document = employer_permit_xml().decode("utf-8").encode("cp1251")
    error = refused(document)
    assert error.reason == Reason.ADAPTER_ENCODING
    assert error.line == 4  # <issuing_authority>ГУ МВД России ...


def test_a_declared_encoding_other_than_utf8_is_refused() -> None:
    text = employer_permit_xml().decode("utf-8").replace("UTF-8", "windows-1251", 1)
    error = refused(text.encode("cp1251"))
    assert error.reason == Reason.ADAPTER_ENCODING
    assert "windows-1251" in error.diagnostic


def test_utf16_is_refused() -> None:
    assert refused(employer_permit_xml().decode("utf-8").encode("utf-16")).reason == Reason.ADAPTER_ENCODING


def test_an_xsd_violation_names_the_line_of_the_element() -> None:
    document = employer_permit_xml().replace(b"<quota>120</quota>", b"<quota>many</quota>")
    error = refused(document)
    assert error.reason == Reason.SCHEMA_INVALID
    assert error.line == 14
    assert "quota" in error.diagnostic


def test_a_document_that_is_not_well_formed_names_its_line() -> None:
    document = employer_permit_xml().replace(b"</status>", b"</statuss>")
    error = refused(document)
    assert error.reason == Reason.MESSAGE_MALFORMED
    assert error.line == 11


def test_a_rule_of_the_agreement_keeps_its_article() -> None:
    # The XSD cannot say Art. 14 (departure = decision + 15 days); the model does.
    document = RU.render(sample_payloads()["work_permit.cancellation"]).replace(
        b"<departure_deadline>2025-02-25</departure_deadline>",
        b"<departure_deadline>2025-03-25</departure_deadline>",
    )
    error = refused(document, "cancel.xml")
    assert error.reason == Reason.AGREEMENT_RULE
    assert error.article == "14"
    assert error.filename == "cancel.xml"


def test_an_unknown_render_format_is_refused() -> None:
    with pytest.raises(Exception, match="renders xml"):
        RU.render(sample_payloads()["employer.permit"], fmt="pdf")


async def test_import_sends_the_document_to_the_named_recipient(tmp_path: Path) -> None:
    path = tmp_path / "permit.xml"
    path.write_bytes(employer_permit_xml())
    sender = RecordingSender()
    result = await import_file(path, adapter=RU, gateway=sender, to="TJ-MOL", sender="RU-MVD")
    assert [(p, to, s) for p, to, s in sender.sent] == [
        (sample_payloads()["employer.permit"], "TJ-MOL", "RU-MVD")
    ]
    assert [message_type for message_type, _ in result.sent] == ["employer.permit"]


async def test_hostile_files_dropped_in_the_inbox_land_in_failed_and_send_nothing(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    hostile = {
        "xxe.xml": XXE,
        "billion-laughs.xml": BILLION_LAUGHS,
        "external-dtd.xml": EXTERNAL_DTD,
        "cp1251.xml": employer_permit_xml().decode("utf-8").encode("cp1251"),
        "namespace.xml": employer_permit_xml().replace(b"employer.permit:1", b"employer.permit:9"),
    }
    for name, data in hostile.items():
        (inbox / name).write_bytes(data)
    (inbox / "good.xml").write_bytes(employer_permit_xml())
    (inbox / "still-writing.xml.part").write_bytes(b"<payl")
    sender = RecordingSender()

    async def handle(name: str, data: bytes) -> None:
        await import_bytes(data, filename=name, adapter=RU, gateway=sender, to="TJ-MOL", sender="RU-MVD")

    outcomes = await FolderDrop(inbox=inbox, handle=handle).process_once()

    assert {o.name for o in outcomes} == {*hostile, "good.xml"}
    assert len(sender.sent) == 1  # only good.xml
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["good.xml"]
    failed = inbox / "failed"
    for name, data in hostile.items():
        assert (failed / name).read_bytes() == data
        reason = (failed / f"{name}.reason.txt").read_text("utf-8")
        assert f"file: {name}" in reason
        assert "line: " in reason
    assert "reason: message.malformed" in (failed / "xxe.xml.reason.txt").read_text("utf-8")
    assert "reason: adapter.encoding" in (failed / "cp1251.xml.reason.txt").read_text("utf-8")
    assert "reason: adapter.invalid" in (failed / "namespace.xml.reason.txt").read_text("utf-8")
    assert (inbox / "still-writing.xml.part").exists()  # not picked up until renamed
