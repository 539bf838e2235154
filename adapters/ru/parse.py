"""Russian XML documents in: the XML form of a payload, checked by its XSD before the model sees it.

Order of checks, cheapest and most dangerous first: size, encoding, any DTD (which is where
XXE, billion laughs and external DTDs live), well-formedness under the hardened parser, the root's
namespace (which names the message type), the XSD, then the model and the rules of the agreement.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from lxml import etree

from adapters.base import MINISTRY_TYPES, AdapterError, check_size, decode_utf8
from broker.core.catalogue import CATALOGUE, Payload
from broker.core.catalogue.xmlform import ROOT, hardened_parser, namespace, parse_payload_xml
from broker.core.errors import Reason, ValidationError

XSD_DIR = Path(__file__).resolve().parents[2] / "schemas" / "xsd"

_DECLARED_ENCODING = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']")
_DOCTYPE = re.compile(rb"<!DOCTYPE", re.IGNORECASE)
_NAMESPACES = {namespace(t, v): (t, v) for (t, v) in CATALOGUE if t in MINISTRY_TYPES}


@cache
def xsd_for(message_type: str, version: int) -> etree.XMLSchema:
    path = XSD_DIR / f"{message_type}-{version}.xsd"
    return etree.XMLSchema(etree.parse(str(path), hardened_parser()))


def parse_document(data: bytes, *, filename: str) -> Payload:
    check_size(data, filename=filename)
    _check_encoding(data, filename=filename)
    doctype = _DOCTYPE.search(data)
    if doctype:
        raise AdapterError(
            Reason.MESSAGE_MALFORMED,
            "a document type declaration is refused (entities and external DTDs are never loaded)",
            filename=filename,
            line=data[: doctype.start()].count(b"\n") + 1,
        )
    try:
        root = etree.fromstring(data, hardened_parser())
    except etree.XMLSyntaxError as exc:
        line = exc.lineno or 1
        raise AdapterError(
            Reason.MESSAGE_MALFORMED, f"XML is not well-formed: {exc.msg}", filename=filename, line=line
        ) from None
    message_type, version = _message_type(root, filename=filename)
    schema = xsd_for(message_type, version)
    if not schema.validate(root):
        error = schema.error_log[0]  # type: ignore[index]  # lxml-stubs lack _ListErrorLog.__getitem__
        raise AdapterError(
            Reason.SCHEMA_INVALID,
            f"not valid against {message_type}-{version}.xsd: {error.message}",
            filename=filename,
            line=error.line or 1,
        )
    try:
        return parse_payload_xml(message_type, version, data)
    except ValidationError as error:
        raise AdapterError.wrap(error, filename=filename, line=_line_of(root)) from None


def _check_encoding(data: bytes, *, filename: str) -> None:
    declared = _DECLARED_ENCODING.match(data.removeprefix(b"\xef\xbb\xbf"))
    if declared and declared.group(1).decode("ascii").lower() not in ("utf-8", "utf8"):
        raise AdapterError(
            Reason.ADAPTER_ENCODING,
            f"the document declares encoding {declared.group(1).decode('ascii')}; documents are UTF-8",
            filename=filename,
            line=1,
        )
    decode_utf8(data, filename=filename)


def _message_type(root: etree._Element, *, filename: str) -> tuple[str, int]:
    qname = etree.QName(root)
    found = _NAMESPACES.get(qname.namespace or "")
    if found is None or qname.localname != ROOT:
        known = ", ".join(sorted(_NAMESPACES))
        raise AdapterError(
            Reason.ADAPTER_INVALID,
            f"root element {{{qname.namespace or ''}}}{qname.localname} is no message type; "
            f"expected <{ROOT}> in one of {known}",
            filename=filename,
            line=_line_of(root),
        )
    return found


def _line_of(element: etree._Element) -> int:
    line = element.sourceline  # typed loosely by lxml-stubs
    return line if isinstance(line, int) else 1
