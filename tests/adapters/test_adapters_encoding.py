"""National files that are not UTF-8: refused with `adapter.encoding`, and told what they look like.

The files are built here from rendered documents, saved in the encodings an export tool may choose.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.base import AdapterError
from adapters.folder_drop import FolderDrop
from adapters.pipeline import import_bytes
from adapters.ru import RussianAdapter
from adapters.tj import adapter as tajik_adapter
from broker.core.catalogue import sample_payloads
from broker.core.errors import Reason
from tests.adapters.test_adapters_ru import RecordingSender

RU = RussianAdapter()


def legislation_xml() -> str:
    """A document of ASCII and basic Cyrillic only, declaring UTF-8: UTF-16 of it is valid UTF-8."""
    text = RU.render(sample_payloads()["legislation.change"]).decode("utf-8")
    assert "encoding='UTF-8'" in text.splitlines()[0]
    assert all(c.isascii() or "\u0410" <= c <= "\u044f" for c in text)
    return text


def refused_by_ru(data: bytes) -> AdapterError:
    with pytest.raises(AdapterError) as caught:
        RU.parse(data, filename="notice.xml")
    assert caught.value.reason == Reason.ADAPTER_ENCODING
    return caught.value


@pytest.mark.parametrize(("codec", "name"), [("utf-16-le", "UTF-16LE"), ("utf-16-be", "UTF-16BE")])
def test_utf16_without_a_byte_order_mark_under_a_utf8_declaration_is_refused(codec: str, name: str) -> None:
    document = legislation_xml().encode(codec)
    document.decode("utf-8")  # the trap: every byte is valid UTF-8, and lxml would read it as UTF-16
    error = refused_by_ru(document)
    assert f"looks like {name} without a byte-order mark" in error.diagnostic
    assert error.line == 1
    assert "Windows-1251" not in error.diagnostic


@pytest.mark.parametrize(
    ("data", "detected"),
    [
        (legislation_xml().encode("utf-16"), "UTF-16LE (it starts with that byte-order mark)"),
        (legislation_xml().encode("utf-16-be"), "UTF-16BE without a byte-order mark"),
        (legislation_xml().encode("utf-32-le"), "UTF-32LE without a byte-order mark"),
        (legislation_xml().encode("utf-32-be"), "UTF-32BE without a byte-order mark"),
        (b"\x00\x00\xfe\xff" + legislation_xml().encode("utf-32-be"), "UTF-32BE (it starts with that"),
        (legislation_xml().encode("cp1251"), "perhaps Windows-1251"),
        (legislation_xml().encode("koi8-r"), "perhaps KOI8-R"),
    ],
    ids=["utf-16-bom", "utf-16-be", "utf-32-le", "utf-32-be", "utf-32-bom", "windows-1251", "koi8-r"],
)
def test_the_refusal_says_what_the_bytes_look_like(data: bytes, detected: str) -> None:
    error = refused_by_ru(data)
    assert detected in error.diagnostic
    assert error.diagnostic.endswith("save it as UTF-8")


def test_a_single_byte_cyrillic_file_names_the_offending_byte_and_its_line() -> None:
    data = legislation_xml().encode("cp1251")
    offset = next(i for i, byte in enumerate(data) if byte > 0x7F)
    error = refused_by_ru(data)
    found = f"byte 0x{data[offset]:02X} at offset {offset}"
    assert f"not UTF-8: {found}; perhaps Windows-1251" in error.diagnostic
    assert error.line == data[:offset].count(b"\n") + 1


def test_a_stray_byte_in_utf8_text_is_not_called_windows_1251() -> None:
    # Read as Windows-1251, the UTF-8 Cyrillic around it is Cyrillic letters too ("РџСЂ..."): no guess.
    data = legislation_xml().encode("utf-8").replace(b"</payload>", b"\x81</payload>")
    error = refused_by_ru(data)
    assert "byte 0x81" in error.diagnostic
    assert "the rest of the file is UTF-8 (1 stray byte sequence(s) in it)" in error.diagnostic
    assert "1251" not in error.diagnostic


def test_bytes_in_no_encoding_we_know_are_not_called_windows_1251() -> None:
    ascii_only = legislation_xml().encode("utf-8").decode("ascii", errors="ignore").encode("ascii")
    error = refused_by_ru(ascii_only.replace(b"</payload>", b"\x81\x8d\x90\x98</payload>"))
    assert "byte 0x81" in error.diagnostic
    assert "no text in an encoding we recognise" in error.diagnostic
    assert "1251" not in error.diagnostic


def test_a_nul_byte_in_utf8_text_is_refused() -> None:
    data = legislation_xml().encode("utf-8").replace(b"</payload>", b"\x00</payload>")
    error = refused_by_ru(data)
    assert "a text file has no NUL bytes" in error.diagnostic
    assert error.line == data.count(b"\n")  # the last line, where the NUL is


def test_a_tajik_export_in_utf16_without_a_byte_order_mark_is_refused(tmp_path: Path) -> None:
    csv = "Рақами иҷозатнома,Номи ташкилот\n0012345,Agency\n".encode("utf-16-le")
    with pytest.raises(AdapterError) as caught:
        tajik_adapter(state_dir=tmp_path).parse(csv, filename="agencies.csv")
    assert caught.value.reason == Reason.ADAPTER_ENCODING
    assert "UTF-16LE without a byte-order mark" in caught.value.diagnostic


async def test_the_folder_drop_files_a_utf16_document_as_failed_with_the_detection(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    document = legislation_xml().encode("utf-16-le")
    (inbox / "law.xml").write_bytes(document)
    sender = RecordingSender()

    async def handle(name: str, data: bytes) -> None:
        await import_bytes(data, filename=name, adapter=RU, gateway=sender, to="TJ-MOL", sender="RU-MINTRUD")

    await FolderDrop(inbox=inbox, handle=handle).process_once()

    assert sender.sent == []
    assert (inbox / "failed" / "law.xml").read_bytes() == document
    reason = (inbox / "failed" / "law.xml.reason.txt").read_text("utf-8")
    assert "reason: adapter.encoding" in reason
    assert "UTF-16LE without a byte-order mark" in reason
