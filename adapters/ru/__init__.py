"""Russia: XML documents validated by XSD (`schemas/xsd/`), one message per document."""

from __future__ import annotations

from pathlib import Path

from adapters.base import MINISTRY_TYPES
from adapters.ru.parse import parse_document
from adapters.ru.render import XML, render_document
from broker.core.catalogue import Payload
from broker.core.errors import LocalError, Reason

__all__ = ["RussianAdapter", "adapter"]


class RussianAdapter:
    country = "RU"
    supported_types = MINISTRY_TYPES
    render_formats = (XML,)

    def parse(self, data: bytes, *, filename: str) -> list[Payload]:
        return [parse_document(data, filename=filename)]

    def render(self, payload: Payload, *, fmt: str = XML) -> bytes:
        if fmt != XML:
            raise LocalError(Reason.ADAPTER_INVALID, f"the RU adapter renders {XML}, not {fmt!r}")
        return render_document(payload)

    def outgoing(self, data: bytes, *, filename: str) -> list[Payload]:
        # Each document is one notice: importing it sends it.
        return self.parse(data, filename=filename)

    def record_sent(self, payload: Payload) -> None:
        """Nothing to remember: documents are not incremental."""


def adapter(*, state_dir: Path) -> RussianAdapter:
    """The factory every country package has; this adapter keeps no state in `state_dir`."""
    del state_dir
    return RussianAdapter()
