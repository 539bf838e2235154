"""Art. 3.3: changes in national law on hiring foreign workers, and acts on labour, employment,
emigration and immigration."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import Field

from broker.core.catalogue.base import Attachment, Payload
from broker.core.catalogue.fields import (
    UNIQUE_ITEMS_SCHEMA,
    LanguageCode,
    LongText,
    ShortText,
    Text,
    unique_items,
)


class LegislationArea(StrEnum):
    LABOUR = "labour"
    EMPLOYMENT = "employment"
    EMIGRATION = "emigration"
    IMMIGRATION = "immigration"


class LegislationChange(Payload):
    MESSAGE_TYPE: ClassVar[str] = "legislation.change"
    VERSION: ClassVar[int] = 1

    act_title: Text
    act_number: ShortText
    issuing_body: Text
    adoption_date: date
    # No ordering rule against adoption_date: acts may apply retroactively.
    effective_date: date
    areas: Annotated[
        tuple[LegislationArea, ...],
        Field(min_length=1, json_schema_extra=UNIQUE_ITEMS_SCHEMA),
        unique_items(),
    ]
    summary: LongText
    language: LanguageCode
    document: Attachment
