"""The payload base class and the value models several messages share.

Rules of the agreement fail with `agreement_rule(...)`: a pydantic error whose message starts with the
article, so that `parse_payload` can answer `agreement.rule` with the article named. Other
inconsistencies (an expiry before an issue date) fail with `inconsistent(...)` and become
`schema.invalid`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import date
from enum import StrEnum
from typing import ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from broker.core.catalogue.fields import (
    Count,
    CountryCode,
    CyrillicName,
    DocumentNumber,
    LatinName,
    Sha256Hex,
    ShortText,
    SubdivisionCode,
    TaxId,
    Text,
    add_years,
)

AGREEMENT_RULE = "agreement_rule"
PERMIT_MAX_YEARS = 3  # Art. 4.2 as amended by the 2013 protocol

# Inline attachments are for small documents; larger ones travel by reference (hash and size only).
MAX_INLINE_BASE64 = 2_800_000


def agreement_rule(article: str, message: str) -> PydanticCustomError:
    """An error naming the article of the agreement that the message breaks."""
    return PydanticCustomError(AGREEMENT_RULE, "Art. {article}: " + message, {"article": article})


def inconsistent(message: str) -> PydanticCustomError:
    return PydanticCustomError("inconsistent", message)


class Model(BaseModel):
    """Strict, immutable, closed: a peer's extra field or a loose type is an error, not a guess."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")


class Payload(Model):
    """The body of one message type, at one schema version."""

    MESSAGE_TYPE: ClassVar[str]
    VERSION: ClassVar[int]
    PERSONAL: ClassVar[bool] = False

    def subject_citizenship(self) -> str | None:
        """Citizenship of the worker the message is about, for routing to that state's consulate."""
        return None


class IdentityDocumentType(StrEnum):
    PASSPORT = "passport"
    ID_CARD = "id_card"
    OTHER = "other"


class IdentityDocument(Model):
    type: IdentityDocumentType
    number: DocumentNumber
    issuer: ShortText


class Worker(Model):
    """A worker in the sense of Art. 2: a citizen of one Party working temporarily in the other."""

    surname_cyrillic: CyrillicName
    given_names_cyrillic: CyrillicName
    surname_latin: LatinName
    given_names_latin: LatinName
    date_of_birth: date
    citizenship: CountryCode
    identity_document: IdentityDocument


class PartyKind(StrEnum):
    LEGAL_ENTITY = "legal_entity"
    INDIVIDUAL_ENTREPRENEUR = "individual_entrepreneur"
    INDIVIDUAL = "individual"  # Art. 2(a): a customer may be a natural person


class Party(Model):
    """An employer, a customer of works or services (Art. 2), or a recruitment agency."""

    kind: PartyKind
    name: Text
    tax_id: TaxId
    region: SubdivisionCode

    @property
    def country(self) -> str:
        return self.region[:2]


class Address(Model):
    region: SubdivisionCode
    locality: ShortText
    street_address: Text | None = None


class Attachment(Model):
    """A document, identified by its hash; the content travels inline only when it is small."""

    media_type: str = Field(pattern=r"^[a-z]+/[a-z0-9][a-z0-9.+-]*$", max_length=100)
    sha256: Sha256Hex
    size: Count
    content_base64: str | None = Field(
        default=None,
        max_length=MAX_INLINE_BASE64,
        json_schema_extra={"contentEncoding": "base64"},
    )

    @model_validator(mode="after")
    def _content_matches_digest(self) -> Self:
        if self.content_base64 is None:
            return self
        content = self.content()
        if len(content) != self.size:
            raise inconsistent("attachment size does not match the inline content")
        if hashlib.sha256(content).hexdigest() != self.sha256:
            raise inconsistent("attachment sha256 does not match the inline content")
        return self

    def content(self) -> bytes:
        """The inline content, decoded; empty if the attachment travels by reference."""
        if self.content_base64 is None:
            return b""
        try:
            return base64.b64decode(self.content_base64, validate=True)
        except binascii.Error:
            raise inconsistent("attachment content is not valid base64") from None

    @classmethod
    def inline(cls, *, media_type: str, content: bytes) -> Attachment:
        return cls(
            media_type=media_type,
            sha256=hashlib.sha256(content).hexdigest(),
            size=len(content),
            content_base64=base64.b64encode(content).decode("ascii"),
        )


class Permit(Model):
    """A worker's work permit (Art. 4.2)."""

    number: DocumentNumber
    issuing_authority: Text
    issue_date: date
    expiry_date: date

    @model_validator(mode="after")
    def _validity_within_three_years(self) -> Self:
        if self.expiry_date < self.issue_date:
            raise inconsistent("permit expiry_date is before its issue_date")
        if self.expiry_date > add_years(self.issue_date, PERMIT_MAX_YEARS):
            raise agreement_rule("4.2", "a work permit is issued for at most three years")
        return self
