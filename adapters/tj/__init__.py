"""Tajikistan: registry exports (CSV or JSON, Tajik or Russian headers) and notices as JSON.

Importing a registry export sends only what changed since the previous export (`adapters.tj.sync`);
a notice is sent as it is. Received messages render as JSON or CSV notices, labelled in Tajik or in
Russian.
"""

from __future__ import annotations

from pathlib import Path

from adapters.base import MINISTRY_TYPES
from adapters.tj.parse import parse_file
from adapters.tj.registry import REGISTRIES
from adapters.tj.render import FORMATS, render_notice
from adapters.tj.sync import SyncState, changes
from broker.core.catalogue import Payload
from broker.core.errors import LocalError, Reason

__all__ = ["TajikAdapter", "adapter"]

STATE_FILE = "adapter-tj-registry.sqlite"


class TajikAdapter:
    country = "TJ"
    supported_types = MINISTRY_TYPES
    render_formats = tuple(FORMATS)

    def __init__(self, *, state: SyncState) -> None:
        self._state = state

    def parse(self, data: bytes, *, filename: str) -> list[Payload]:
        return parse_file(data, filename=filename).payloads

    def render(self, payload: Payload, *, fmt: str = "json-tg") -> bytes:
        if fmt not in FORMATS:
            raise LocalError(
                Reason.ADAPTER_INVALID, f"the TJ adapter renders {', '.join(FORMATS)}, not {fmt!r}"
            )
        syntax, language = FORMATS[fmt]
        return render_notice(payload, syntax=syntax, language=language)

    def outgoing(self, data: bytes, *, filename: str) -> list[Payload]:
        parsed = parse_file(data, filename=filename)
        if parsed.registry is None:
            return parsed.payloads
        return changes(parsed.registry, parsed.payloads, self._state.told(parsed.registry))

    def record_sent(self, payload: Payload) -> None:
        # A notice about a licence or permission also updates what the partner knows of it.
        for registry in REGISTRIES:
            if registry.message_type == payload.MESSAGE_TYPE:
                self._state.remember(registry, payload)


def adapter(*, state_dir: Path) -> TajikAdapter:
    """`state_dir` is the country's state directory (settings.country_state_dir)."""
    return TajikAdapter(state=SyncState(path=state_dir / STATE_FILE))
