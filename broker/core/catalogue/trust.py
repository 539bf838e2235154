"""`trust.update`: a country's CA tells the peer about new certificates and revocations, over the channel.

Signed like every message (by the country's `ca` authority), so the peer checks it against what it
trusts *now* before applying it (`broker.core.trust_update`). The certificate material itself is DER in
base64: CA certificates and CRLs carry their own signatures, which the peer checks as well.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Self

from pydantic import Field, model_validator

from broker.core.catalogue.base import Model, Payload, inconsistent
from broker.core.catalogue.fields import CountryCode

MAX_ITEMS = 64
DerBase64 = Annotated[
    str,
    Field(
        min_length=4,
        max_length=16384,
        pattern=r"^[A-Za-z0-9+/]+={0,2}$",
        description="DER, standard base64",
        json_schema_extra={"contentEncoding": "base64"},
    ),
]


class CaRollover(Model):
    """A new CA generation: its self-signed certificate, and its key certified by the current CA."""

    certificate: DerBase64
    cross_certificate: DerBase64


class TrustUpdate(Payload):
    MESSAGE_TYPE: ClassVar[str] = "trust.update"
    VERSION: ClassVar[int] = 1

    country: CountryCode  # whose PKI changed: always the signer's own country
    ca_rollovers: tuple[CaRollover, ...] = Field(max_length=MAX_ITEMS)
    # Key-agreement certificates (the keys personal data is sealed to) and new signing certificates.
    authority_certificates: tuple[DerBase64, ...] = Field(max_length=MAX_ITEMS)
    crl: DerBase64 | None = None

    @model_validator(mode="after")
    def _says_something(self) -> Self:
        if not (self.ca_rollovers or self.authority_certificates or self.crl):
            raise inconsistent("a trust update carries a CA rollover, authority certificates or a CRL")
        return self
