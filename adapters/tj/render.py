"""Received payloads out, as Tajik notices: JSON or CSV, labelled in Tajik or in Russian."""

from __future__ import annotations

import csv
import io
import json

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
    writer = csv.DictWriter(buffer, fieldnames=list(row), lineterminator="\r\n")
    writer.writeheader()
    writer.writerow(row)
    # With a byte order mark, Excel opens UTF-8 CSV as UTF-8 rather than the ANSI code page.
    return b"\xef\xbb\xbf" + buffer.getvalue().encode("utf-8")
