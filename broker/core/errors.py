"""One error family for the whole exchange.

Every error carries a machine-readable reason code (routed on by gateways, written into receipts and
quarantine) and a sentence a person can act on. Third-party exceptions are wrapped at the boundary
that calls the library, so nothing foreign escapes into a gateway loop.

`LocalError` is something we refuse to do (a message we will not send); `RemoteError` is something a
peer sent us that we reject: it becomes a negative receipt and a quarantine entry.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Reason codes. Listed with their meaning in docs/reason-codes.md (a test keeps both in step)."""

    MESSAGE_MALFORMED = "message.malformed"
    MESSAGE_OVERSIZED = "message.oversized"
    SIGNATURE_MISSING = "signature.missing"
    SIGNATURE_INVALID = "signature.invalid"
    SIGNATURE_ALGORITHM = "signature.algorithm"
    SIGNATURE_TYPE = "signature.type"
    CERT_MALFORMED = "cert.malformed"
    CERT_UNTRUSTED = "cert.untrusted"
    CERT_EXPIRED = "cert.expired"
    CERT_NOT_YET_VALID = "cert.not_yet_valid"
    CERT_REVOKED = "cert.revoked"
    CRL_STALE = "crl.stale"
    CERT_USAGE = "cert.usage"
    CERT_AUTHORITY_MISMATCH = "cert.authority_mismatch"
    SCHEMA_INVALID = "schema.invalid"
    SCHEMA_UNKNOWN_TYPE = "schema.unknown_type"
    AGREEMENT_RULE = "agreement.rule"
    POLICY_SENDER_NOT_ALLOWED = "policy.sender_not_allowed"
    POLICY_RECIPIENT_UNKNOWN = "policy.recipient_unknown"
    POLICY_WRONG_RECIPIENT = "policy.wrong_recipient"
    POLICY_SUBSCRIBER_NOT_ALLOWED = "policy.subscriber_not_allowed"
    POLICY_SUBMITTER_NOT_ALLOWED = "policy.submitter_not_allowed"
    POLICY_TYPE_NOT_COVERED = "policy.type_not_covered"
    POLICY_OUTSIDE_PERIOD = "policy.outside_period"
    POLICY_NO_AGREEMENT = "policy.no_agreement"
    REPLAY_DUPLICATE = "replay.duplicate"
    REPLAY_CONFLICT = "replay.conflict"
    REPLAY_STALE = "replay.stale"
    TRANSPORT_UNROUTABLE = "transport.unroutable"
    TRANSPORT_NOT_CONFIRMED = "transport.not_confirmed"
    TRANSPORT_UNAVAILABLE = "transport.unavailable"
    AUDIT_UNAVAILABLE = "audit.unavailable"
    AUDIT_TAMPERED = "audit.tampered"
    AUDIT_PROOF_INVALID = "audit.proof_invalid"
    CONFIG_INVALID = "config.invalid"
    CONFIG_INSECURE_TLS = "config.insecure_tls"
    CONFIG_SECRET_EXPOSED = "config.secret_exposed"  # noqa: S105 - a reason code, not a password
    KEY_MISSING = "key.missing"
    HANDLER_CRASHED = "handler.crashed"
    AUDIT_OUT_OF_RANGE = "audit.out_of_range"
    TRANSPORT_FORBIDDEN = "transport.forbidden"
    PAYLOAD_UNDECRYPTABLE = "payload.undecryptable"
    PAYLOAD_NOT_SEALED = "payload.not_sealed"
    TRUST_UPDATE_INVALID = "trust.update_invalid"
    AUDIT_CHECKPOINT_INVALID = "audit.checkpoint_invalid"
    AUDIT_WITNESS_MISMATCH = "audit.witness_mismatch"
    AUDIT_NOT_COVERED = "audit.not_covered"
    AUDIT_RECONCILE_GAP = "audit.reconcile_gap"
    AUDIT_REPLAY_REFUSED = "audit.replay_refused"
    AUDIT_ARCHIVE_INVALID = "audit.archive_invalid"
    AUDIT_ARCHIVE_MISSING = "audit.archive_missing"
    AUDIT_ARCHIVE_REFUSED = "audit.archive_refused"
    ADAPTER_INVALID = "adapter.invalid"
    ADAPTER_ENCODING = "adapter.encoding"
    ADAPTER_UNSAFE_PATH = "adapter.unsafe_path"
    AUDIT_BUNDLE_OVERSIZED = "audit.bundle_oversized"
    AUDIT_WRITER_LOST = "audit.writer_lost"
    CLI_USAGE = "cli.usage"
    INPUT_UNREADABLE = "input.unreadable"
    INTERNAL_ERROR = "internal.error"
    SUBMISSION_MALFORMED = "submission.malformed"
    SUBMISSION_OVERSIZED = "submission.oversized"
    SUBMISSION_REQUEST_REUSED = "submission.request_reused"
    SUBMISSION_NO_GATEWAY = "submission.no_gateway"
    RECEIPT_PENDING = "receipt.pending"
    AUTH_UNAUTHENTICATED = "auth.unauthenticated"
    AUTH_FORBIDDEN = "auth.forbidden"
    API_REQUEST_INVALID = "api.request_invalid"
    API_NOT_FOUND = "api.not_found"
    API_RATE_LIMITED = "api.rate_limited"
    API_TIMEOUT = "api.timeout"
    CONSOLE_CSRF_INVALID = "console.csrf_invalid"


class ExchangeError(Exception):
    """Base of every error the exchange raises on purpose."""

    def __init__(self, reason: Reason, diagnostic: str, *, article: str | None = None) -> None:
        self.reason = reason
        self.diagnostic = diagnostic
        self.article = article
        super().__init__(f"[{reason}] {diagnostic}")

    def as_dict(self) -> dict[str, str]:
        out = {"reason": str(self.reason), "diagnostic": self.diagnostic}
        if self.article:
            out["article"] = self.article
        return out


class RemoteError(ExchangeError):
    """Something a peer sent that we reject: answered with a negative receipt and quarantined."""


class VerificationError(RemoteError):
    """Bytes, signature, certificate or trust checks failed."""


class ValidationError(RemoteError):
    """The payload does not fit its schema or breaks a rule of the agreement."""


class PolicyError(RemoteError):
    """The agreement does not allow this sender, recipient or type."""


class ReplayError(RemoteError):
    """Duplicate, conflicting or stale message id."""


class LocalError(ExchangeError):
    """Something we refuse to do or cannot do on our side (send, configure, store)."""


class TransportError(LocalError):
    """The broker refused, returned or did not confirm a message."""


class AuditError(LocalError):
    """The audit store is unavailable, or its content does not verify."""


class ConfigError(LocalError):
    """Settings, agreement files or key material are missing or inconsistent."""
