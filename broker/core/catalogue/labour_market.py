"""Art. 3.3: the state of the labour markets and the living conditions of workers."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, ClassVar, Self

from pydantic import Field, model_validator

from broker.core.catalogue.base import Model, Payload, inconsistent
from broker.core.catalogue.fields import (
    UNIQUE_ITEMS_SCHEMA,
    Amount,
    LanguageCode,
    LongText,
    RegionCode,
    unique_items,
)


class IndicatorCode(StrEnum):
    VACANCIES = "vacancies"
    FOREIGN_WORKERS = "foreign_workers"
    WORK_PERMITS_ISSUED = "work_permits_issued"
    REGISTERED_UNEMPLOYED = "registered_unemployed"
    UNEMPLOYMENT_RATE = "unemployment_rate"
    AVERAGE_MONTHLY_WAGE = "average_monthly_wage"


PERSONS = "persons"
PERCENT = "percent"
_COUNTED_IN_PERSONS = {
    IndicatorCode.VACANCIES,
    IndicatorCode.FOREIGN_WORKERS,
    IndicatorCode.WORK_PERMITS_ISSUED,
    IndicatorCode.REGISTERED_UNEMPLOYED,
}


class Indicator(Model):
    code: IndicatorCode
    value: Amount
    unit: str = Field(
        pattern=r"^(persons|percent|[A-Z]{3})$",
        description="persons, percent, or an ISO 4217 currency code for money",
    )
    region: RegionCode | None = None  # None: the figure covers every region of the report

    @model_validator(mode="after")
    def _unit_fits_code(self) -> Self:
        if self.code in _COUNTED_IN_PERSONS:
            expected_ok = self.unit == PERSONS and self.value == self.value.to_integral_value()
        elif self.code is IndicatorCode.UNEMPLOYMENT_RATE:
            expected_ok = self.unit == PERCENT
        else:
            expected_ok = self.unit not in (PERSONS, PERCENT)
        if not expected_ok:
            raise inconsistent(f"unit or value does not fit indicator {self.code.value}")
        return self


class LabourMarketReport(Payload):
    MESSAGE_TYPE: ClassVar[str] = "labour_market.report"
    VERSION: ClassVar[int] = 1

    period_start: date
    period_end: date
    regions: Annotated[
        tuple[RegionCode, ...],
        Field(min_length=1, json_schema_extra=UNIQUE_ITEMS_SCHEMA),
        unique_items(),
    ]
    indicators: tuple[Indicator, ...] = Field(min_length=1)
    living_conditions: LongText
    language: LanguageCode

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.period_end < self.period_start:
            raise inconsistent("period_end is before period_start")
        keys = [(indicator.code, indicator.region) for indicator in self.indicators]
        if len(set(keys)) != len(keys):
            raise inconsistent("an indicator is reported twice for the same region")
        if any(i.region is not None and i.region not in self.regions for i in self.indicators):
            raise inconsistent("an indicator names a region the report does not cover")
        return self
