"""Received payloads out, as Tajik notices: JSON or CSV, labelled in Tajik or in Russian."""

from __future__ import annotations

import csv
import io
import json

from adapters.tj.formula import neutralised
from adapters.tj.labels import Language
from adapters.tj.notice import notice_to_json, notice_to_row
from broker.core.catalogue import Payload

FORMATS: dict[str, tuple[str, Language]] = {
    "json-tg": ("json", Language.TAJIK),
    "json-ru": ("json", Language.RUSSIAN),
    "csv-tg": ("csv", Language.TAJIK),
    "csv-ru": ("csv", Language.RUSSIAN),
}


def render_notice(payload: Payload, *, syntax: str, language: Language) -> bytes:
    if syntax == "json":
        text = json.dumps(notice_to_json(payload, language), ensure_ascii=False, indent=2) + "\n"
        return text.encode("utf-8")
    row = notice_to_row(payload, language)
    buffer = io.StringIO(newline="")
    # Every cell quoted, so a separator inside one never starts a new cell (Russian-locale Excel
    # splits on semicolons), and none starting a formula (adapters.tj.formula).
    writer = csv.DictWriter(buffer, fieldnames=list(row), lineterminator="\r\n", quoting=csv.QUOTE_ALL)
    writer.writeheader()
    writer.writerow({path: neutralised(text) for path, text in row.items()})
    # With a byte order mark, Excel opens UTF-8 CSV as UTF-8 rather than the ANSI code page.
    return b"\xef\xbb\xbf" + buffer.getvalue().encode("utf-8")
