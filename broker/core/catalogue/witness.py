"""`checkpoint.witness`: a gateway hands its countersignature of the peer's checkpoint back to the peer.

The payload is the witness record exactly as the witness keeps it in its own log (a WITNESS entry,
`broker.audit.checkpoint.WitnessRecord`): the RFC 8785 JSON of this payload is byte for byte that
record. So the checkpoint's origin holds the same signed document the witness logged, and nothing is
re-encoded on the way. The model checks only the shape; `broker.audit.witnessing` checks both signatures
and that the checkpoint is really one of the receiver's own.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from broker.core.catalogue.base import Payload

MAX_JWS = 4000  # as a receipt's checkpoint signature: a certificate chain of two Ed25519 certificates fits

CompactJws = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$",
        max_length=MAX_JWS,
        description="the countersigned checkpoint: an attached compact JWS (RFC 7515 section 7.1)",
    ),
]
DetachedJws = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9_-]+\.\.[A-Za-z0-9_-]+$",
        max_length=MAX_JWS,
        description="detached JWS over the RFC 8785 JSON of the other members",
    ),
]
AuthorityId = Annotated[str, Field(pattern=r"^[A-Z]{2}-[A-Z0-9-]+$", max_length=100)]
# The audit log's own spelling of an instant (microseconds, Z): the signed bytes depend on it.
RecordTime = Annotated[
    str,
    Field(
        pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$",
        description="UTC, e.g. 2026-01-31T12:00:00.000000Z",
    ),
]


class CheckpointWitness(Payload):
    MESSAGE_TYPE: ClassVar[str] = "checkpoint.witness"
    VERSION: ClassVar[int] = 1

    format: Literal["labour-exchange-witness/1"]
    checkpoint: CompactJws
    witness: AuthorityId  # the gateway that countersigned: always the message's sender
    time: RecordTime  # when it countersigned
    signature: DetachedJws
