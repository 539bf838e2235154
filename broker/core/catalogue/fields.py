"""Scalar field types shared by every message: codes, names, hashes, dates.

Patterns are written so that the same text is valid for pydantic (Rust regex) and JSON Schema
(ECMA-262); the XSD in `schemas/xsd/common-1.xsd` spells the same rules in XSD regex syntax.
"""

from __future__ import annotations

from collections.abc import Hashable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, TypeVar

from pydantic import AfterValidator, AwareDatetime, Field
from pydantic_core import PydanticCustomError

# Largest integer every JSON implementation reads exactly (I-JSON, RFC 7493); RFC 8785 refuses more.
MAX_SAFE_INT = 2**53 - 1

CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2 country code")]
SubdivisionCode = Annotated[
    str, Field(pattern=r"^[A-Z]{2}-[A-Z0-9]{1,3}$", description="ISO 3166-2 subdivision code, e.g. RU-MOW")
]
RegionCode = Annotated[
    str,
    Field(
        pattern=r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$",
        description="ISO 3166-1 alpha-2 (whole country) or ISO 3166-2 subdivision code",
    ),
]
LanguageCode = Annotated[str, Field(pattern=r"^[a-z]{2,3}$", description="ISO 639 language code")]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256, lowercase hex")]
TaxId = Annotated[str, Field(pattern=r"^[0-9A-Z]{5,20}$", description="Taxpayer number (INN in RU and TJ)")]
DocumentNumber = Annotated[str, Field(pattern=r"^[0-9A-Z][0-9A-Z/-]{0,39}$")]

# Cyrillic block U+0400..U+04FF holds the Tajik letters (ғ ӣ қ ӯ ҳ ҷ) as well as the Russian ones.
CyrillicName = Annotated[str, Field(pattern=r"^[\u0400-\u04FF]+([ '\-][\u0400-\u04FF]+)*$", max_length=100)]
LatinName = Annotated[str, Field(pattern=r"^[A-Za-z]+([ '\-][A-Za-z]+)*$", max_length=100)]

ShortText = Annotated[str, Field(min_length=1, max_length=300)]
Text = Annotated[str, Field(min_length=1, max_length=1000)]
LongText = Annotated[str, Field(min_length=1, max_length=20000)]

Count = Annotated[int, Field(ge=0, le=MAX_SAFE_INT)]
PositiveCount = Annotated[int, Field(ge=1, le=MAX_SAFE_INT)]
Amount = Annotated[Decimal, Field(ge=0, max_digits=20, decimal_places=4)]


def _require_utc(value: datetime) -> datetime:
    # A canonical message has one spelling of an instant; local offsets would make two.
    if value.utcoffset() != timedelta(0):
        raise PydanticCustomError("utc_required", "datetimes must be in UTC (suffix Z or +00:00)")
    return value


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_require_utc)]

H = TypeVar("H", bound=Hashable)


def _require_unique(values: tuple[H, ...]) -> tuple[H, ...]:
    if len(set(values)) != len(values):
        raise PydanticCustomError("duplicate_items", "items must not repeat")
    return values


def unique_items() -> AfterValidator:
    """Validator for tuples whose items are a set (kept as a tuple so canonical JSON is stable)."""
    return AfterValidator(_require_unique)


UNIQUE_ITEMS_SCHEMA = {"uniqueItems": True}


def add_years(start: date, years: int) -> date:
    """Same calendar day `years` later; 29 February falls back to 28 February."""
    try:
        return start.replace(year=start.year + years)
    except ValueError:
        return start.replace(year=start.year + years, day=28)


def age_on(date_of_birth: date, day: date) -> int:
    """Full years of age on `day`."""
    had_birthday = (day.month, day.day) >= (date_of_birth.month, date_of_birth.day)
    return day.year - date_of_birth.year - (0 if had_birthday else 1)
