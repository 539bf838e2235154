"""One realistic, valid payload per message type: a Tajik worker in Russia and the two ministries.

Names, numbers and figures are invented; the legislation sample describes the real 2013 protocol
that amended Art. 4 (its date of entry into force here is illustrative).
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, date, datetime
from decimal import Decimal
from uuid import UUID

from broker.core.catalogue.base import (
    Address,
    Attachment,
    IdentityDocument,
    IdentityDocumentType,
    Party,
    PartyKind,
    Payload,
    Permit,
    Worker,
)
from broker.core.catalogue.death import ConsularOffice, ResponsibleParty, WorkerCategory, WorkerDeath
from broker.core.catalogue.employer import EmployerPermit, PermissionStatus
from broker.core.catalogue.labour_market import Indicator, IndicatorCode, LabourMarketReport
from broker.core.catalogue.legislation import LegislationArea, LegislationChange
from broker.core.catalogue.receipt import Checkpoint, Receipt, ReceiptBatch, ReceiptLine, Verdict
from broker.core.catalogue.recruitment import RecruitmentAgencyLicense
from broker.core.catalogue.trust import TrustUpdate
from broker.core.catalogue.witness import CheckpointWitness
from broker.core.catalogue.work_permit import CancellationReason, WorkPermitCancellation

ARTICLE_4_2_AS_AMENDED = (
    "Разрешение на работу выдается работнику на срок действия заключенного им договора, "
    "указанного в статье 2 настоящего Соглашения, но не более чем на три года.\n"
    "Разрешение на работу является основанием для продления срока временного пребывания "
    "работника на территории принимающего государства на срок действия разрешения на работу "
    "без выезда за пределы принимающего государства.\n"
)

MOSCOW_MVD = "ГУ МВД России по г. Москве"


def _worker() -> Worker:
    return Worker(
        surname_cyrillic="Раҳимов",
        given_names_cyrillic="Фаррух Давлатович",
        surname_latin="RAKHIMOV",
        given_names_latin="FARRUKH",
        date_of_birth=date(1994, 3, 12),
        citizenship="TJ",
        identity_document=IdentityDocument(
            type=IdentityDocumentType.PASSPORT, number="400123456", issuer="ВКД Ҷумҳурии Тоҷикистон"
        ),
    )


def _moscow_employer() -> Party:
    return Party(
        kind=PartyKind.LEGAL_ENTITY,
        name="ООО «Северный квартал»",
        tax_id="7701234567",
        region="RU-MOW",
    )


def _legislation_change() -> LegislationChange:
    return LegislationChange(
        act_title=(
            "Протокол о внесении изменений в Соглашение между Правительством Республики Таджикистан "
            "и Правительством Российской Федерации о трудовой деятельности и защите прав граждан "
            "Республики Таджикистан в Российской Федерации и граждан Российской Федерации "
            "в Республике Таджикистан от 16 октября 2004 года"
        ),
        act_number="б/н",
        issuing_body="Правительство Республики Таджикистан и Правительство Российской Федерации",
        adoption_date=date(2013, 10, 29),
        effective_date=date(2013, 10, 29),
        areas=(LegislationArea.LABOUR, LegislationArea.IMMIGRATION),
        summary=(
            "Статья 4 изложена в новой редакции: разрешение на работу выдается на срок действия "
            "договора, но не более чем на три года, и является основанием для продления срока "
            "временного пребывания работника без выезда из принимающего государства."
        ),
        language="ru",
        document=Attachment.inline(media_type="text/plain", content=ARTICLE_4_2_AS_AMENDED.encode("utf-8")),
    )


def _employer_permit() -> EmployerPermit:
    return EmployerPermit(
        permit_number="77-2024-001234",
        issuing_authority=MOSCOW_MVD,
        employer=_moscow_employer(),
        status=PermissionStatus.GRANTED,
        valid_from=date(2024, 3, 1),
        valid_until=date(2025, 2, 28),
        quota=120,
    )


def _recruitment_agency_license() -> RecruitmentAgencyLicense:
    return RecruitmentAgencyLicense(
        license_number="0012345",
        issuing_authority="Вазорати меҳнат, муҳоҷират ва шуғли аҳолии Ҷумҳурии Тоҷикистон",
        agency=Party(
            kind=PartyKind.LEGAL_ENTITY,
            name="ҶДММ «Агентии кадрии Меҳнат»",
            tax_id="020012345",
            region="TJ-DU",
        ),
        status=PermissionStatus.GRANTED,
        valid_from=date(2023, 6, 1),
        valid_until=date(2028, 5, 31),
    )


def _labour_market_report() -> LabourMarketReport:
    return LabourMarketReport(
        period_start=date(2024, 1, 1),
        period_end=date(2024, 12, 31),
        regions=("RU-MOW", "RU-MOS"),
        indicators=(
            Indicator(code=IndicatorCode.VACANCIES, value=Decimal(215000), unit="persons", region="RU-MOW"),
            Indicator(code=IndicatorCode.VACANCIES, value=Decimal(98000), unit="persons", region="RU-MOS"),
            Indicator(
                code=IndicatorCode.AVERAGE_MONTHLY_WAGE,
                value=Decimal("135400.00"),
                unit="RUB",
                region="RU-MOW",
            ),
            Indicator(code=IndicatorCode.UNEMPLOYMENT_RATE, value=Decimal("1.2"), unit="percent"),
        ),
        living_conditions=(
            "Работодатели строительной отрасли предоставляют общежития; средняя стоимость аренды койко-места "
            "в Москве выросла за год примерно на десять процентов."
        ),
        language="ru",
    )


def _work_permit_cancellation() -> WorkPermitCancellation:
    return WorkPermitCancellation(
        worker=_worker(),
        permit=Permit(
            number="772400123456",
            issuing_authority=MOSCOW_MVD,
            issue_date=date(2024, 5, 20),
            expiry_date=date(2025, 5, 19),
        ),
        employer=_moscow_employer(),
        decision_date=date(2025, 2, 10),
        decision_authority=MOSCOW_MVD,
        reason=CancellationReason.ART12_2_UNAUTHORISED_CHANGE_OF_EMPLOYER,
        reason_text="Работник без уведомления перешел к другому работодателю.",
        departure_deadline=date(2025, 2, 25),
    )


def _worker_death() -> WorkerDeath:
    certificate = b"%PDF-1.7 placeholder for the medical certificate of death"
    return WorkerDeath(
        worker=_worker(),
        date_of_death=date(2025, 1, 17),
        place_of_death=Address(
            region="RU-MOW", locality="Москва", street_address="ул. Профсоюзная, 45, строительная площадка"
        ),
        registration_address=Address(region="RU-MOW", locality="Москва", street_address="ул. Вавилова, 12"),
        category=WorkerCategory.C_EMPLOYMENT_CONTRACT,
        responsible_party=ResponsibleParty.HOST_STATE_EMPLOYER,
        employer=_moscow_employer(),
        work_related=True,
        compensation_office=ConsularOffice(
            name="Посольство Российской Федерации в Республике Таджикистан",
            of_state="RU",
            located_in="TJ",
            city="Душанбе",
        ),
        attachments=(
            Attachment(
                media_type="application/pdf",
                sha256=hashlib.sha256(certificate).hexdigest(),
                size=len(certificate),
            ),
        ),
    )


def _receipt() -> Receipt:
    return Receipt(
        message_id=UUID("01946b2e-8f3a-7c41-9d2e-5b7a10c4e8f1"),
        sha256=hashlib.sha256(b"the exact bytes of the received envelope").hexdigest(),
        verdict=Verdict.ACCEPTED,
        received_at=datetime(2025, 1, 17, 9, 30, 12, tzinfo=UTC),
        audit_index=41,
        checkpoint=Checkpoint(tree_size=42, root_hash=hashlib.sha256(b"root").hexdigest()),
    )


def _receipt_batch() -> ReceiptBatch:
    return ReceiptBatch(
        received_at=datetime(2025, 1, 17, 9, 30, 12, tzinfo=UTC),
        checkpoint=Checkpoint(tree_size=45, root_hash=hashlib.sha256(b"root").hexdigest()),
        lines=(
            ReceiptLine(
                message_id=UUID("01946b2e-8f3a-7c41-9d2e-5b7a10c4e8f1"),
                sha256=hashlib.sha256(b"the exact bytes of the received envelope").hexdigest(),
                verdict=Verdict.ACCEPTED,
                audit_index=41,
            ),
            ReceiptLine(
                message_id=UUID("01946b2e-9011-7a02-8c3d-2f4e6a8b0c1d"),
                sha256=hashlib.sha256(b"the exact bytes of a stale envelope").hexdigest(),
                verdict=Verdict.REJECTED,
                reason="replay.stale",
                diagnostic="created_at is older than 7 days",
                audit_index=43,
            ),
        ),
    )


def _trust_update() -> TrustUpdate:
    # Stand-in bytes keep the sample readable; broker/core/trust_update.py parses and checks real DER.
    return TrustUpdate(
        country="RU",
        ca_rollovers=(),
        authority_certificates=(base64.b64encode(b"DER of RU-MVD's new key-agreement certificate").decode(),),
        crl=base64.b64encode(b"DER of the RU CA's CRL number 7").decode(),
    )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _checkpoint_witness() -> CheckpointWitness:
    # Stand-in header and signature bytes keep the sample readable; broker/audit/witnessing.py checks real ones.
    checkpoint = (
        b'{"format":"labour-exchange-checkpoint/1","origin":"RU-GW","root_hash":"'
        + hashlib.sha256(b"root").hexdigest().encode()
        + b'","time":"2025-01-17T09:30:12.000000Z","tree_size":42}'
    )
    header = _b64url(b'{"alg":"Ed25519","x5c":["...RU-GW certificate chain..."]}')
    witness_header = _b64url(b'{"alg":"Ed25519","x5c":["...TJ-GW certificate chain..."]}')
    return CheckpointWitness(
        format="labour-exchange-witness/1",
        checkpoint=f"{header}.{_b64url(checkpoint)}.{_b64url(b'RU-GW signature')}",
        witness="TJ-GW",
        time="2025-01-17T09:30:13.250000Z",
        signature=f"{witness_header}..{_b64url(b'TJ-GW countersignature')}",
    )


def sample_payloads() -> dict[str, Payload]:
    """A fresh valid payload of every message type, keyed by type."""
    samples: list[Payload] = [
        _legislation_change(),
        _employer_permit(),
        _recruitment_agency_license(),
        _labour_market_report(),
        _work_permit_cancellation(),
        _worker_death(),
        _receipt(),
        _receipt_batch(),
        _trust_update(),
        _checkpoint_witness(),
    ]
    return {sample.MESSAGE_TYPE: sample for sample in samples}
