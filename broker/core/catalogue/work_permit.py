"""Art. 12.2 and 14: a work permit is annulled and the worker must leave within 15 days."""

from __future__ import annotations

from datetime import date, timedelta
from enum import StrEnum
from typing import ClassVar, Self

from pydantic import model_validator

from broker.core.catalogue.base import Party, Payload, Permit, Worker, agreement_rule, inconsistent
from broker.core.catalogue.fields import LongText, Text, age_on

DEPARTURE_DAYS = 15  # Art. 14
MINIMUM_AGE = 18  # Art. 10


class CancellationReason(StrEnum):
    ART12_2_OTHER_PAID_WORK = "art12_2_other_paid_work"
    ART12_2_UNAUTHORISED_CHANGE_OF_EMPLOYER = "art12_2_unauthorised_change_of_employer"
    OTHER = "other"  # a ground of the host state's law; reason_text says which


class WorkPermitCancellation(Payload):
    MESSAGE_TYPE: ClassVar[str] = "work_permit.cancellation"
    VERSION: ClassVar[int] = 1
    PERSONAL: ClassVar[bool] = True

    worker: Worker
    permit: Permit
    employer: Party
    decision_date: date
    decision_authority: Text
    reason: CancellationReason
    reason_text: LongText | None = None
    departure_deadline: date

    def subject_citizenship(self) -> str | None:
        return self.worker.citizenship

    @model_validator(mode="after")
    def _agreement_rules(self) -> Self:
        if age_on(self.worker.date_of_birth, self.permit.issue_date) < MINIMUM_AGE:
            raise agreement_rule("10", "the worker was under 18 on the permit's issue date")
        if self.departure_deadline != self.decision_date + timedelta(days=DEPARTURE_DAYS):
            raise agreement_rule("14", "departure_deadline must be decision_date + 15 days")
        if self.reason is CancellationReason.OTHER and self.reason_text is None:
            raise inconsistent("reason 'other' requires reason_text")
        if not self.permit.issue_date <= self.decision_date <= self.permit.expiry_date:
            raise inconsistent("decision_date lies outside the permit's validity")
        return self
