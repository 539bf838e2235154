"""`broker audit ...`: the auditor's commands, read-only, offline on a snapshot of a store and trust bundles;
and the operator's two that write, `archive` and `compact` (docs/audit.md, "Archiving old entries").

One module per verb family; importing them registers their commands on `audit_app`.
"""

from broker.cli.audit import archive, evidence, proofs, replay, snapshot, verify
from broker.cli.audit.common import EXIT_ERROR, EXIT_FAILED, audit_app, load_trust

__all__ = [
    "EXIT_ERROR",
    "EXIT_FAILED",
    "archive",
    "audit_app",
    "evidence",
    "load_trust",
    "proofs",
    "replay",
    "snapshot",
    "verify",
]
