"""Art. 3.3: employers that received permission to hire foreign workers."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import ClassVar, Self

from pydantic import model_validator

from broker.core.catalogue.base import Party, Payload, inconsistent
from broker.core.catalogue.fields import DocumentNumber, PositiveCount, Text


class PermissionStatus(StrEnum):
    GRANTED = "granted"
    RENEWED = "renewed"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


class EmployerPermit(Payload):
    MESSAGE_TYPE: ClassVar[str] = "employer.permit"
    VERSION: ClassVar[int] = 1

    permit_number: DocumentNumber
    issuing_authority: Text
    employer: Party
    status: PermissionStatus
    valid_from: date
    valid_until: date
    quota: PositiveCount | None = None  # number of foreign workers the permission covers

    @model_validator(mode="after")
    def _valid_period(self) -> Self:
        if self.valid_until < self.valid_from:
            raise inconsistent("valid_until is before valid_from")
        return self
