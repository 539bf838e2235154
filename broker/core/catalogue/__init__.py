"""The message catalogue: one pydantic model per message type and version, and the way in and out.

`parse_payload` is the only door for a peer's payload: strict JSON, closed models, rules of the
agreement; every failure becomes our `ValidationError` with a reason code (and the article, for a
broken rule of the agreement).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import pydantic

from broker.core.catalogue.base import AGREEMENT_RULE, Payload
from broker.core.catalogue.death import WorkerDeath
from broker.core.catalogue.employer import EmployerPermit
from broker.core.catalogue.labour_market import LabourMarketReport
from broker.core.catalogue.legislation import LegislationChange
from broker.core.catalogue.receipt import Receipt, ReceiptBatch
from broker.core.catalogue.recruitment import RecruitmentAgencyLicense
from broker.core.catalogue.samples import sample_payloads
from broker.core.catalogue.trust import TrustUpdate
from broker.core.catalogue.witness import CheckpointWitness
from broker.core.catalogue.work_permit import WorkPermitCancellation
from broker.core.errors import Reason, ValidationError

__all__ = [
    "CATALOGUE",
    "Payload",
    "citizenship_of",
    "parse_payload",
    "payload_class",
    "payload_to_json",
    "sample_payloads",
]

_PAYLOAD_CLASSES: tuple[type[Payload], ...] = (
    LegislationChange,
    EmployerPermit,
    RecruitmentAgencyLicense,
    LabourMarketReport,
    WorkPermitCancellation,
    WorkerDeath,
    Receipt,
    ReceiptBatch,
    TrustUpdate,
    CheckpointWitness,
)

CATALOGUE: Mapping[tuple[str, int], type[Payload]] = MappingProxyType(
    {(cls.MESSAGE_TYPE, cls.VERSION): cls for cls in _PAYLOAD_CLASSES}
)

# A hostile payload can produce thousands of errors; a receipt needs only the first few.
_MAX_REPORTED_ERRORS = 5
_MAX_DIAGNOSTIC_CHARS = 2000  # fits a receipt's diagnostic field with room to spare


def payload_class(message_type: str, version: int) -> type[Payload]:
    try:
        return CATALOGUE[(message_type, version)]
    except KeyError:
        raise ValidationError(
            Reason.SCHEMA_UNKNOWN_TYPE, f"no message type {message_type!r} at version {version}"
        ) from None


def parse_payload(message_type: str, version: int, payload_json: bytes) -> Payload:
    """Validate a payload's JSON bytes against its model and the rules of the agreement."""
    cls = payload_class(message_type, version)
    try:
        return cls.model_validate_json(payload_json)
    except pydantic.ValidationError as exc:
        raise _wrap(message_type, version, exc) from None


def payload_to_json(payload: Payload) -> dict[str, object]:
    """JSON-ready form of a payload; `parse_payload` reads it back to an equal payload."""
    return payload.model_dump(mode="json")


def citizenship_of(payload: Payload) -> str | None:
    """The citizenship of the worker a message concerns (None if it concerns no worker)."""
    return payload.subject_citizenship()


def _wrap(message_type: str, version: int, exc: pydantic.ValidationError) -> ValidationError:
    # include_input=False: the values may be personal data, and diagnostics travel in receipts.
    errors = exc.errors(include_url=False, include_input=False)
    rules = [error for error in errors if error["type"] == AGREEMENT_RULE]
    others = [error for error in errors if error["type"] != AGREEMENT_RULE]
    shown = [*rules, *others][:_MAX_REPORTED_ERRORS]
    parts = [f"{_path(error['loc'])}: {error['msg']}" for error in shown]
    if len(errors) > len(shown):
        parts.append(f"and {len(errors) - len(shown)} more")
    diagnostic = (f"{message_type} v{version}: " + "; ".join(parts))[:_MAX_DIAGNOSTIC_CHARS]
    if rules:
        article = str(rules[0].get("ctx", {}).get("article", ""))
        return ValidationError(Reason.AGREEMENT_RULE, diagnostic, article=article or None)
    return ValidationError(Reason.SCHEMA_INVALID, diagnostic)


def _path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(payload)"
