"""Art. 15: the death of a worker, who repatriates the body, and compensation."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import ClassVar, Self

from pydantic import model_validator

from broker.core.catalogue.base import (
    Address,
    Attachment,
    Model,
    Party,
    Payload,
    Worker,
    agreement_rule,
    inconsistent,
)
from broker.core.catalogue.fields import CountryCode, ShortText, Text, age_on
from broker.core.catalogue.work_permit import MINIMUM_AGE


class WorkerCategory(StrEnum):
    """Art. 2: the contract under which the worker works in the host state."""

    A_WORKS_CONTRACT = "a"  # employed by a home-state legal entity that has a works contract
    B_CIVIL_LAW_CONTRACT = "b"  # civil-law contract with a customer in the host state
    C_EMPLOYMENT_CONTRACT = "c"  # employment contract with a host-state employer


class ResponsibleParty(StrEnum):
    """Who organises and pays the repatriation of the body and belongings (Art. 15.1-15.3)."""

    HOME_STATE_EMPLOYER = "home_state_employer"
    HOST_STATE_CUSTOMER = "host_state_customer"
    HOST_STATE_EMPLOYER = "host_state_employer"


RESPONSIBLE_FOR_CATEGORY = {
    WorkerCategory.A_WORKS_CONTRACT: (ResponsibleParty.HOME_STATE_EMPLOYER, "15.1"),
    WorkerCategory.B_CIVIL_LAW_CONTRACT: (ResponsibleParty.HOST_STATE_CUSTOMER, "15.2"),
    WorkerCategory.C_EMPLOYMENT_CONTRACT: (ResponsibleParty.HOST_STATE_EMPLOYER, "15.3"),
}


class ConsularOffice(Model):
    """The host state's diplomatic or consular office in the worker's home state (Art. 15.4)."""

    name: Text
    of_state: CountryCode
    located_in: CountryCode
    city: ShortText


class WorkerDeath(Payload):
    MESSAGE_TYPE: ClassVar[str] = "worker.death"
    VERSION: ClassVar[int] = 1
    PERSONAL: ClassVar[bool] = True

    worker: Worker
    date_of_death: date
    place_of_death: Address
    registration_address: Address  # Art. 15.5: the interior bodies of this place are informed
    category: WorkerCategory
    responsible_party: ResponsibleParty
    employer: Party  # the employer, or for category b the customer
    work_related: bool  # Art. 15.4: through the employer's fault, or a work injury
    compensation_office: ConsularOffice | None = None
    attachments: tuple[Attachment, ...]

    def subject_citizenship(self) -> str | None:
        return self.worker.citizenship

    @model_validator(mode="after")
    def _agreement_rules(self) -> Self:
        if self.date_of_death < self.worker.date_of_birth:
            raise inconsistent("date_of_death is before date_of_birth")
        if age_on(self.worker.date_of_birth, self.date_of_death) < MINIMUM_AGE:
            raise agreement_rule("10", "a worker is at least 18 years old")
        self._check_category()
        self._check_compensation()
        return self

    def _check_category(self) -> None:
        home = self.worker.citizenship
        if self.category is WorkerCategory.A_WORKS_CONTRACT and self.employer.country != home:
            raise agreement_rule("2", "in category a the employer is a legal entity of the home state")
        if self.category is not WorkerCategory.A_WORKS_CONTRACT and self.employer.country == home:
            raise agreement_rule("2", "in categories b and c the employer or customer is of the host state")
        expected, article = RESPONSIBLE_FOR_CATEGORY[self.category]
        if self.responsible_party is not expected:
            raise agreement_rule(
                article, f"in category {self.category.value} the responsible party is {expected.value}"
            )

    def _check_compensation(self) -> None:
        office = self.compensation_office
        if not self.work_related:
            if office is not None:
                raise agreement_rule("15.4", "compensation_office is only given for a work-related death")
            return
        if office is None:
            raise agreement_rule(
                "15.4", "a work-related death requires the consular office that pays compensation"
            )
        if office.located_in != self.worker.citizenship or office.of_state == office.located_in:
            raise agreement_rule(
                "15.4", "compensation is paid through the host state's office in the worker's home state"
            )
        if self.category is not WorkerCategory.A_WORKS_CONTRACT and office.of_state != self.employer.country:
            raise agreement_rule("15.4", "the paying office belongs to the host state of the employer")
