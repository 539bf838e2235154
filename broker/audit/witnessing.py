"""Hand a countersignature back to the checkpoint's origin, and check one handed to us (pure: no I/O).

When a receipt brings the peer's signed checkpoint, our gateway countersigns it and logs a WITNESS
entry (`broker.audit.stores.checkpointer`). It then sends the same record to the peer as a
`checkpoint.witness` message, which the peer keeps as a RECEIVED entry of its own log. From then on
each country's log holds the other's signature over what it showed: a log rewritten later, even
re-signed with its gateway's real key, disagrees with a countersignature its operator cannot forge.

Witness messages are never receipted (a receipt would carry a checkpoint, which would be witnessed,
which would be receipted, for ever) and not tracked in the outbox: one lost costs nothing that the
WITNESS entry in the witness's log does not still prove.
"""

from __future__ import annotations

from datetime import datetime

from broker.audit.checkpoint import SignedCheckpoint, WitnessRecord, hash_matches, verify_witness
from broker.core.catalogue.receipt import RECEIPT_TYPES
from broker.core.catalogue.witness import CheckpointWitness
from broker.core.errors import Reason, VerificationError
from broker.core.pki import Signer
from broker.core.sealing import SealedMessage, seal
from broker.core.trust import TrustStore

WITNESS_TYPE = CheckpointWitness.MESSAGE_TYPE

# Types a gateway never answers with a receipt, not even a negative one: answering them could make
# two gateways answer each other for ever.
UNANSWERED_TYPES = frozenset({*RECEIPT_TYPES, WITNESS_TYPE})


def seal_witness(
    record: WitnessRecord, *, signer: Signer, recipient: str, created_at: datetime
) -> SealedMessage:
    """The `checkpoint.witness` message from the witness gateway (`signer`) to the checkpoint's origin."""
    if record.witness != signer.authority_id:
        raise ValueError(f"{signer.authority_id} cannot send {record.witness}'s countersignature")
    return seal(
        record.to_payload(),
        sender=signer.authority_id,
        recipient=recipient,
        signer=signer,
        created_at=created_at,
    )


def countersigned_record(
    payload: CheckpointWitness, *, sender: str, origin: str, trust: TrustStore
) -> WitnessRecord:
    """The record a `checkpoint.witness` message carries, checked as far as it can be without our log.

    Its countersignature is the sender's own, over a checkpoint of `origin`'s log (ours), and both
    signatures verify with signers trusted at their times.
    """
    record = WitnessRecord.from_payload(payload)
    if record.witness != sender:
        raise VerificationError(
            Reason.CERT_AUTHORITY_MISMATCH, f"the countersignature is {record.witness}'s but {sender} sent it"
        )
    if record.checkpoint.body.origin != origin:
        raise VerificationError(
            Reason.AUDIT_CHECKPOINT_INVALID,
            f"countersigns a checkpoint of {record.checkpoint.body.origin}'s log, not of {origin}'s",
        )
    verify_witness(record, trust=trust)
    return record


def check_against_log(checkpoint: SignedCheckpoint, *, log_size: int, root: bytes | None) -> None:
    """Our checkpoint as the peer countersigned it must be our log as it is: same root at that size.

    `root` is our log's root at the checkpoint's size (None if the log is smaller than that).
    Anything else means one of the two logs says something else than what was signed: an alarm.
    """
    size, signed_root = checkpoint.body.tree_size, checkpoint.body.root_hash
    if root is None or size > log_size:
        raise VerificationError(
            Reason.AUDIT_WITNESS_MISMATCH,
            f"countersigns a checkpoint of {size} entries but our log has only {log_size}",
        )
    if not hash_matches(signed_root, root):
        raise VerificationError(
            Reason.AUDIT_WITNESS_MISMATCH,
            f"countersigns root {signed_root.hex()} at size {size}, but our log's root at that size is "
            f"{root.hex()}",
        )


__all__ = [
    "UNANSWERED_TYPES",
    "WITNESS_TYPE",
    "check_against_log",
    "countersigned_record",
    "seal_witness",
]
