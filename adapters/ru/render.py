"""Received payloads out, as the Russian XML document that the import side reads."""

from __future__ import annotations

from broker.core.catalogue import Payload
from broker.core.catalogue.xmlform import payload_to_xml

XML = "xml"


def render_document(payload: Payload) -> bytes:
    """UTF-8 XML in the payload's namespace, valid against its XSD; `parse_document` reads it back."""
    return payload_to_xml(payload)
