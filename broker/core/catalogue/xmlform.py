"""The XML form of a payload, described by `schemas/xsd/<type>-<version>.xsd`.

The XML form carries the same fields as the JSON form: root `<payload>` in the namespace
`urn:labour-exchange:<type>:<version>`; each field an element named like the field, in model
order; an absent (None) field is left out; a tuple is a wrapper element with one `<item>` per value;
booleans are `true`/`false`. Reading goes back through `parse_payload`, so XML and JSON obey the
same rules. The parser never loads a DTD, resolves an entity or touches the network.
"""

from __future__ import annotations

import json
import types
from typing import Annotated, Union, get_args, get_origin

from lxml import etree
from pydantic import BaseModel

from broker.core.catalogue import parse_payload, payload_class
from broker.core.catalogue.base import Payload
from broker.core.errors import Reason, ValidationError

ROOT = "payload"
ITEM = "item"
MAX_XML_BYTES = 4_000_000  # above the largest inline attachment, far below what huge_tree guards


def namespace(message_type: str, version: int) -> str:
    return f"urn:labour-exchange:{message_type}:{version}"


def hardened_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_comments=True
    )


def payload_to_xml(payload: Payload) -> bytes:
    ns = namespace(payload.MESSAGE_TYPE, payload.VERSION)
    # lxml-stubs type nsmap keys as str; None is lxml's key for the default namespace.
    root = etree.Element(f"{{{ns}}}{ROOT}", nsmap={None: ns})  # type: ignore[dict-item]
    _fill(root, ns, payload.model_dump(mode="json"))
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def parse_payload_xml(message_type: str, version: int, document: bytes) -> Payload:
    """Read the XML form of a payload (already checked against its XSD, or not: the model decides)."""
    cls = payload_class(message_type, version)
    ns = namespace(message_type, version)
    root = _parse(document)
    if root.tag != f"{{{ns}}}{ROOT}":
        raise ValidationError(Reason.SCHEMA_INVALID, f"root element must be {{{ns}}}{ROOT}")
    data = _model_json(cls, root, ns, path=ROOT)
    return parse_payload(message_type, version, json.dumps(data, ensure_ascii=False).encode("utf-8"))


def _parse(document: bytes) -> etree._Element:
    if len(document) > MAX_XML_BYTES:
        raise ValidationError(Reason.MESSAGE_OVERSIZED, f"XML document over {MAX_XML_BYTES} bytes")
    try:
        tree = etree.fromstring(document, hardened_parser()).getroottree()
    except etree.XMLSyntaxError as exc:
        raise ValidationError(Reason.MESSAGE_MALFORMED, f"XML is not well-formed: {exc}") from None
    doctype: str = getattr(tree.docinfo, "doctype", "")  # DocInfo.doctype is missing from lxml-stubs
    if doctype or tree.docinfo.internalDTD is not None:
        raise ValidationError(Reason.MESSAGE_MALFORMED, "XML with a document type declaration is refused")
    return tree.getroot()


def _fill(element: etree._Element, ns: str, value: object) -> None:
    if isinstance(value, dict):
        for key, child_value in value.items():
            if child_value is not None:
                _fill(etree.SubElement(element, f"{{{ns}}}{key}"), ns, child_value)
    elif isinstance(value, list):
        for item in value:
            _fill(etree.SubElement(element, f"{{{ns}}}{ITEM}"), ns, item)
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    else:
        element.text = str(value)


def _model_json(cls: type[BaseModel], element: etree._Element, ns: str, *, path: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for child in _children(element):
        qname = etree.QName(child)
        # A foreign element keeps its full name, so that the model refuses it as an extra field.
        key = qname.localname if qname.namespace == ns else str(child.tag)
        if key in out:
            raise ValidationError(Reason.SCHEMA_INVALID, f"{path}.{key}: element repeated")
        field = cls.model_fields.get(key)
        out[key] = _json_value(field.annotation if field else str, child, ns, path=f"{path}.{key}")
    return out


def _json_value(annotation: object, element: etree._Element, ns: str, *, path: str) -> object:
    annotation = _unwrap(annotation)
    if get_origin(annotation) is tuple:
        item_type = get_args(annotation)[0]
        items = []
        for index, child in enumerate(_children(element)):
            if child.tag != f"{{{ns}}}{ITEM}":
                raise ValidationError(Reason.SCHEMA_INVALID, f"{path}: expected only <{ITEM}> elements")
            items.append(_json_value(item_type, child, ns, path=f"{path}.{index}"))
        return items
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _model_json(annotation, element, ns, path=path)
    text = element.text or ""
    if annotation is bool:
        return {"true": True, "1": True, "false": False, "0": False}.get(text.strip(), text)
    if annotation is int:
        try:
            return int(text.strip())
        except ValueError:
            return text  # the model reports the wrong type, with its path
    return text


def _children(element: etree._Element) -> list[etree._Element]:
    return [child for child in element if isinstance(child.tag, str)]


def _unwrap(annotation: object) -> object:
    """Strip Annotated[...] and `X | None` down to the type that decides the XML shape."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            present = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(present) != 1:
                return annotation
            annotation = present[0]
        else:
            return annotation
