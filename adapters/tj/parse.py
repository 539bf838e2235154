"""Tajik files in: registry exports (CSV or a JSON array of rows) and notices (a JSON object, or CSV
rows with a message-type column). Everything is read and validated before anything is returned, so
one bad row refuses the whole file.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

from adapters.base import MAX_FILE_BYTES, AdapterError, check_size, decode_utf8
from adapters.tj.notice import is_notice_header, notice_from_json, notice_from_row
from adapters.tj.registry import Registry, Row, read_rows, registry_of
from broker.core.catalogue import Payload
from broker.core.errors import Reason


@dataclass(frozen=True)
class TajikFile:
    payloads: list[Payload]
    registry: Registry | None  # set when the file is a full export of that registry


def parse_file(data: bytes, *, filename: str) -> TajikFile:
    check_size(data, filename=filename)
    text = decode_utf8(data, filename=filename)
    if _is_json(text, filename):
        return _parse_json(text, filename=filename)
    return _parse_csv(text, filename=filename)


def _is_json(text: str, filename: str) -> bool:
    lowered = filename.lower()
    if lowered.endswith(".json"):
        return True
    if lowered.endswith(".csv"):
        return False
    return text.lstrip().startswith(("{", "["))


def _parse_csv(text: str, *, filename: str) -> TajikFile:
    first_line = text.split("\n", 1)[0]
    # Russian-locale Excel separates with semicolons.
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","
    csv.field_size_limit(MAX_FILE_BYTES)  # an inline attachment may be one long cell
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        headers = next(reader, None)
        if not headers:
            raise AdapterError(Reason.ADAPTER_INVALID, "the file is empty", filename=filename, line=1)
        rows = []
        start = reader.line_num + 1
        for cells in reader:
            if len(cells) > len(headers):
                raise AdapterError(
                    Reason.ADAPTER_INVALID,
                    f"{len(cells)} cells but {len(headers)} columns",
                    filename=filename,
                    line=start,
                )
            rows.append(Row(line=start, cells=dict(zip(headers, cells, strict=False))))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise AdapterError(
            Reason.ADAPTER_INVALID, f"not valid CSV: {exc}", filename=filename, line=reader.line_num
        ) from None
    if is_notice_header(headers):
        notices = [
            notice_from_row({k: str(v) for k, v in row.cells.items()}, filename=filename, line=row.line)
            for row in rows
            if any(str(v).strip() for v in row.cells.values())
        ]
        return TajikFile(payloads=notices, registry=None)
    registry = _registry(headers, filename=filename)
    return TajikFile(payloads=read_rows(registry, headers, rows, filename=filename), registry=registry)


def _parse_json(text: str, *, filename: str) -> TajikFile:
    decoder = json.JSONDecoder()
    start = len(text) - len(text.lstrip())
    try:
        document, end = decoder.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        raise AdapterError(
            Reason.ADAPTER_INVALID, f"not valid JSON: {exc.msg}", filename=filename, line=exc.lineno
        ) from None
    if text[end:].strip():
        raise AdapterError(
            Reason.ADAPTER_INVALID, "text after the JSON value", filename=filename, line=_line(text, end)
        )
    if isinstance(document, dict):
        notice = notice_from_json(document, filename=filename, line=_line(text, start))
        return TajikFile(payloads=[notice], registry=None)
    if not isinstance(document, list):
        raise AdapterError(
            Reason.ADAPTER_INVALID,
            "expected a notice (an object) or a registry export (an array of rows)",
            filename=filename,
            line=_line(text, start),
        )
    rows = _json_rows(text, start, filename=filename)
    headers = list(dict.fromkeys(key for row in rows for key in row.cells))
    registry = _registry(headers, filename=filename)
    return TajikFile(payloads=read_rows(registry, headers, rows, filename=filename), registry=registry)


def _json_rows(text: str, start: int, *, filename: str) -> list[Row]:
    """The array's objects, each with the line it starts on (json.loads forgets positions)."""
    decoder = json.JSONDecoder()
    rows: list[Row] = []
    position = start + 1  # past "["
    while True:
        position = _skip(text, position, ",")
        if text[position] == "]":
            return rows
        value, end = decoder.raw_decode(text, position)
        line = _line(text, position)
        if not isinstance(value, dict):
            raise AdapterError(
                Reason.ADAPTER_INVALID, "a row must be an object", filename=filename, line=line
            )
        rows.append(Row(line=line, cells=value))
        position = end


def _skip(text: str, position: int, separators: str) -> int:
    while text[position].isspace() or text[position] in separators:
        position += 1
    return position


def _registry(headers: list[str], *, filename: str) -> Registry:
    registry = registry_of(headers)
    if registry is None:
        raise AdapterError(
            Reason.ADAPTER_INVALID,
            "neither a registry export (no licence or permit number column) nor notices "
            "(no message type column)",
            filename=filename,
            line=1,
        )
    return registry


def _line(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1
