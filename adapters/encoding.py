"""What a national file that is not UTF-8 most likely is, so the refusal can say so.

Only UTF-8 is accepted; this module never decodes a file for use, it only names what was found so
the person who exported it knows which setting to change. The checks, in order:

1. a byte-order mark of UTF-32 or UTF-16 (a UTF-8 mark is accepted by the caller);
2. NUL bytes, which no text file of ours has: UTF-16 and UTF-32 without a byte-order mark put them
   in a fixed column (every second or every fourth byte), and such bytes can even be valid UTF-8
   (ASCII and basic Cyrillic in UTF-16LE are), so NUL is refused before anything else reads them;
3. bytes that are not UTF-8: a few stray bytes in otherwise UTF-8 text, or one of the Russian
   single-byte encodings, told apart by which of them reads the bytes as mostly lower-case
   Cyrillic letters (as Russian text is).
"""

from __future__ import annotations

from dataclasses import dataclass

_BOMS = (  # UTF-32 first: its little-endian mark starts with UTF-16's
    (b"\xff\xfe\x00\x00", "UTF-32LE"),
    (b"\x00\x00\xfe\xff", "UTF-32BE"),
    (b"\xff\xfe", "UTF-16LE"),
    (b"\xfe\xff", "UTF-16BE"),
)
# Enough of the file to see the column pattern of NUL bytes; the whole file is decoded to confirm.
_SAMPLE_BYTES = 4096
_SINGLE_BYTE_CYRILLIC = ("Windows-1251", "KOI8-R")
# Share of the non-ASCII characters that must read as Cyrillic letters before we name an encoding
# (the rest are quotes «», dashes, №).
_CYRILLIC_SHARE = 0.5


@dataclass(frozen=True)
class NotUtf8:
    """Why the bytes are refused: `offset` is the first offending byte, `detail` is for a person."""

    offset: int
    detail: str


def find_problem(data: bytes) -> NotUtf8 | None:
    """None when `data` is UTF-8 without NUL bytes (a UTF-8 byte-order mark allowed)."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            return NotUtf8(0, f"the file is {name} (it starts with that byte-order mark)")
    nul = data.find(b"\x00")
    if nul >= 0:
        return NotUtf8(nul, _describe_nul(data, nul))
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return NotUtf8(exc.start, _describe_undecodable(data, exc.start))
    return None


def _describe_nul(data: bytes, offset: int) -> str:
    found = f"byte 0x00 at offset {offset}"
    wide = _utf16_or_32_without_bom(data)
    if wide is None:
        return f"{found}; a text file has no NUL bytes"
    return f"{found}: it looks like {wide} without a byte-order mark"


def _utf16_or_32_without_bom(data: bytes) -> str | None:
    """The wide encoding whose column pattern of NUL bytes the start of `data` shows, if it decodes."""
    sample = data[:_SAMPLE_BYTES]
    sample = sample[: len(sample) - len(sample) % 4]
    quads = [sample[i : i + 4] for i in range(0, len(sample), 4)]
    candidates: list[tuple[str, str]] = []
    # Text in the Basic Multilingual Plane has its two high bytes of every UTF-32 unit zero.
    if quads and all(q[2] == 0 and q[3] == 0 for q in quads):
        candidates.append(("UTF-32LE", "utf-32-le"))
    if quads and all(q[0] == 0 and q[1] == 0 for q in quads):
        candidates.append(("UTF-32BE", "utf-32-be"))
    # Latin and Cyrillic in UTF-16 have a small high byte; ASCII's is zero: NULs in one column.
    odd = sample[1::2].count(0)
    even = sample[0::2].count(0)
    if odd > even:
        candidates.append(("UTF-16LE", "utf-16-le"))
    elif even > odd:
        candidates.append(("UTF-16BE", "utf-16-be"))
    for name, codec in candidates:
        try:
            data.decode(codec)
        except UnicodeDecodeError:
            continue
        return name
    return None


def _describe_undecodable(data: bytes, offset: int) -> str:
    found = f"byte 0x{data[offset]:02X} at offset {offset}"
    # A UTF-8 file with a stray byte also reads as Cyrillic in Windows-1251 ("Р" "С" mojibake),
    # so first ask whether the other non-ASCII bytes are UTF-8.
    text = data.decode("utf-8", errors="replace")
    undecodable = text.count("\ufffd")
    decoded = sum(1 for c in text if ord(c) > 0x7F) - undecodable
    if decoded > undecodable:
        return f"{found}; the rest of the file is UTF-8 ({undecodable} stray byte sequence(s) in it)"
    single = _single_byte_cyrillic(data)
    if single is None:
        return f"{found}, and the file is no text in an encoding we recognise"
    return f"{found}; perhaps {single}: the file reads as Cyrillic text in it"


def _single_byte_cyrillic(data: bytes) -> str | None:
    """Windows-1251 or KOI8-R when one of them reads the non-ASCII bytes as Cyrillic letters."""
    best: tuple[int, str] | None = None
    for name in _SINGLE_BYTE_CYRILLIC:
        try:
            text = data.decode(name)
        except UnicodeDecodeError:
            continue
        beyond_ascii = [c for c in text if ord(c) > 0x7F]
        letters = [c for c in beyond_ascii if _is_cyrillic_letter(c)]
        if not beyond_ascii or len(letters) < _CYRILLIC_SHARE * len(beyond_ascii):
            continue
        # Both encodings put letters in 0xC0-0xFF, cases swapped: Russian text is mostly lower case.
        lower = sum(1 for c in letters if c.islower())
        if best is None or lower > best[0]:
            best = (lower, name)
    return None if best is None else best[1]


def _is_cyrillic_letter(char: str) -> bool:
    return "\u0400" <= char <= "\u04ff" and char.isalpha()
