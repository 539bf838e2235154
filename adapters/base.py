"""The shape every national adapter has, and the error it raises.

An adapter translates between one country's national files and the canonical payloads, both ways.
It does no sending and holds no connection: `adapters.pipeline` reads files and sends what an
adapter returns. A third country is one package with an `adapter(...)` factory returning an object
of this shape, plus its agreement file.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from adapters.encoding import find_problem
from broker.core.catalogue import Payload
from broker.core.errors import ExchangeError, LocalError, Reason

# What ministries exchange under the agreement; receipts and trust updates are the gateways' own.
MINISTRY_TYPES = frozenset(
    {
        "legislation.change",
        "employer.permit",
        "recruitment_agency.license",
        "labour_market.report",
        "work_permit.cancellation",
        "worker.death",
    }
)

# A registry export of a ministry is a few thousand rows; anything far larger is a mistake or an attack.
MAX_FILE_BYTES = 4_000_000


class AdapterError(LocalError):
    """A national file we refuse to turn into messages: nothing of it is sent.

    The diagnostic starts with `file:line` so that the person who produced the file can find the spot.
    """

    def __init__(
        self, reason: Reason, diagnostic: str, *, filename: str, line: int, article: str | None = None
    ) -> None:
        self.filename = filename
        self.line = line
        super().__init__(reason, f"{filename}:{line}: {diagnostic}", article=article)

    @classmethod
    def wrap(cls, error: ExchangeError, *, filename: str, line: int) -> AdapterError:
        """Our own error from the catalogue (schema, rule of the agreement), placed in the file."""
        return cls(error.reason, error.diagnostic, filename=filename, line=line, article=error.article)


@runtime_checkable
class NationalAdapter(Protocol):
    """National files in, canonical payloads out; received payloads in, national files out."""

    @property
    def country(self) -> str:
        """ISO 3166-1 alpha-2 code of the country whose formats this adapter speaks."""
        ...

    @property
    def supported_types(self) -> frozenset[str]:
        """Message types this adapter parses and renders."""
        ...

    @property
    def render_formats(self) -> tuple[str, ...]:
        """Values `render` accepts for `fmt`; the first is the default."""
        ...

    def parse(self, data: bytes, *, filename: str) -> list[Payload]:
        """Every payload the file holds; raises AdapterError naming the file and line."""
        ...

    def render(self, payload: Payload, *, fmt: str) -> bytes:
        """A received payload as a national file."""
        ...

    def outgoing(self, data: bytes, *, filename: str) -> list[Payload]:
        """What importing the file should send: usually `parse`; a registry export sends only changes."""
        ...

    def record_sent(self, payload: Payload) -> None:
        """Called after each payload of `outgoing` was sent, so a re-import does not send it again."""
        ...


def check_size(data: bytes, *, filename: str, limit: int = MAX_FILE_BYTES) -> None:
    if len(data) > limit:
        line = data[:limit].count(b"\n") + 1
        raise AdapterError(
            Reason.MESSAGE_OVERSIZED,
            f"file is {len(data)} bytes, over the limit of {limit} (reached on this line)",
            filename=filename,
            line=line,
        )


def decode_utf8(data: bytes, *, filename: str) -> str:
    """Strict UTF-8 without NUL bytes (a UTF-8 byte order mark, as spreadsheets write it, is dropped).

    A refusal says what the bytes look like instead (UTF-16 with or without a byte-order mark,
    Windows-1251, ...) and names the line of the first offending byte.
    """
    problem = find_problem(data)
    if problem is not None:
        raise AdapterError(
            Reason.ADAPTER_ENCODING,
            f"not UTF-8: {problem.detail}; save it as UTF-8",
            filename=filename,
            line=data[: problem.offset].count(b"\n") + 1,
        )
    return data.decode("utf-8-sig")
