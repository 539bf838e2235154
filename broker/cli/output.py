"""What the `broker` command prints, so that it stays whole in a pipe and readable on a terminal.

On a terminal: rich tables and colour. In a file or a pipe: no colour, no truncation and no hard
wrapping (a table becomes tab-separated lines under a header line), so that a message id or a
diagnostic is never cut. `--json` gives the same facts as JSON for scripts. Errors are one line on
standard error: `error [reason.code] what is wrong`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any, cast

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from broker.cli.terminal import visible
from broker.core.errors import ExchangeError

# Wide enough that no line of ours is ever wrapped when the output is not a terminal.
_PIPE_WIDTH = 100_000
_consoles: dict[int, tuple[IO[str], Console]] = {}


def console_for(stream: IO[str]) -> Console:
    """A console for `stream` as it is now (tests and pipes swap sys.stdout)."""
    cached = _consoles.get(id(stream))
    if cached is not None and cached[0] is stream:
        return cached[1]
    if stream.isatty():
        made = Console(file=stream)
    else:
        made = Console(
            file=stream, width=_PIPE_WIDTH, soft_wrap=True, color_system=None, highlight=False, emoji=False
        )
    _consoles[id(stream)] = (stream, made)
    return made


class _CurrentStream:
    """Stands in for a Console: every call goes to the console of the stream as it is at that moment."""

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr

    def __getattr__(self, name: str) -> Any:
        return getattr(console_for(sys.stderr if self._stderr else sys.stdout), name)


# Module-level names every command uses; typed as Console for callers, resolved per call.
console = cast(Console, _CurrentStream(stderr=False))
err_console = cast(Console, _CurrentStream(stderr=True))


class _Mode:
    debug = False  # set by `broker --debug`: failures keep their traceback


def set_debug(on: bool) -> None:
    _Mode.debug = on


def debugging() -> bool:
    return _Mode.debug


def error_line(error: ExchangeError) -> str:
    return f"[{error.reason}] {error.diagnostic}"


def print_error(text: str) -> None:
    """`error <text>` on standard error, one line; rich never reads brackets in it as markup."""
    err_console.print(f"[red]error[/red] {escape(text)}", highlight=False, soft_wrap=True)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_table(
    columns: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    *,
    as_json: bool = False,
    title: str | None = None,
) -> None:
    """Rows (mappings by column) as a table on a terminal, tab-separated lines in a pipe, or JSON."""
    if as_json:
        print_json([{column: row.get(column) for column in columns} for row in rows])
        return
    if not sys.stdout.isatty():
        lines = ["\t".join(columns)]
        lines += ["\t".join(_cell(row.get(column)) for column in columns) for row in rows]
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        return
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*(escape(_cell(row.get(column))) for column in columns))
    console.print(table)


def _cell(value: Any) -> str:
    """A value for a table cell: control characters (from unverified bytes too) shown, never sent."""
    if value is None:
        return ""
    return visible(str(value)).replace("\t", " ")
