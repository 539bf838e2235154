"""Text from outside shown on a terminal: control characters made visible, never interpreted.

Quarantined bytes, names of files dropped into an inbox and the diagnostics quoting them come from
whoever sent or dropped them. Written raw, an escape sequence can move the cursor, rewrite lines
already printed, retitle the window or, on some terminals, type into the operator's shell; a
right-to-left override can make one name read as another. Every character that is not printable
(C0 and C1 controls, DEL, format characters such as U+202E, line and paragraph separators) is
shown as its Python escape (`\\x1b`, `\\u202e`), and bytes that are not UTF-8 as `\\xNN`.
"""

from __future__ import annotations


def visible(text: str) -> str:
    """`text` with every non-printable character written as its escape (a space stays a space)."""
    if text.isprintable():
        return text
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in text
    )


def visible_bytes(data: bytes) -> str:
    """UTF-8 bytes as `visible` text; a byte that is not part of UTF-8 shows as `\\xNN`."""
    return visible(data.decode("utf-8", errors="backslashreplace"))
