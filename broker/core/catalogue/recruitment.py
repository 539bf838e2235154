"""Art. 3.3: organisations licensed to place citizens in jobs abroad."""

from __future__ import annotations

from datetime import date
from typing import ClassVar, Self

from pydantic import model_validator

from broker.core.catalogue.base import Party, Payload, inconsistent
from broker.core.catalogue.employer import PermissionStatus
from broker.core.catalogue.fields import DocumentNumber, Text


class RecruitmentAgencyLicense(Payload):
    MESSAGE_TYPE: ClassVar[str] = "recruitment_agency.license"
    VERSION: ClassVar[int] = 1

    license_number: DocumentNumber
    issuing_authority: Text
    agency: Party
    status: PermissionStatus
    valid_from: date
    valid_until: date | None = None  # None: the licence has no end date

    @model_validator(mode="after")
    def _valid_period(self) -> Self:
        if self.valid_until is not None and self.valid_until < self.valid_from:
            raise inconsistent("valid_until is before valid_from")
        return self
