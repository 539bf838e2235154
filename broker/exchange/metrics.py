"""Prometheus metrics of a gateway (served with its health endpoints by `status_server`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class GatewayMetrics:
    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.sent = Counter(
            "exchange_sent_total", "Messages published to the peer", ["type"], registry=self.registry
        )
        self.confirmed = Counter(
            "exchange_confirmed_total", "Publishes confirmed by the broker", ["type"], registry=self.registry
        )
        self.received = Counter(
            "exchange_received_total", "Messages accepted from the peer", ["type"], registry=self.registry
        )
        self.rejected = Counter(
            "exchange_rejected_total", "Messages rejected, by reason code", ["reason"], registry=self.registry
        )
        self.resent = Counter(
            "exchange_resent_total",
            "Messages re-sent after their receipt deadline",
            ["type"],
            registry=self.registry,
        )
        self.resend_held = Counter(
            "exchange_resend_held_total",
            "Re-sends not made because an earlier copy still waited in the outbound queue",
            ["type"],
            registry=self.registry,
        )
        self.retryable_rejections = Counter(
            "exchange_retryable_rejections_total",
            "Negative receipts that leave the message outstanding to be re-sent, by reason code",
            ["reason"],
            registry=self.registry,
        )
        self.inbound_held = Counter(
            "exchange_inbound_held_total",
            "Retries of inbound messages held for a fault of our own (never rejected), by reason code",
            ["reason"],
            registry=self.registry,
        )
        self.keys_reloaded = Counter(
            "exchange_keys_reloaded_total",
            "Key store reloads by a running gateway, by outcome (changed, failed)",
            ["outcome"],
            registry=self.registry,
        )
        self.crl_stale = Counter(
            "exchange_crl_stale_total",
            "Messages accepted on a CRL past its nextUpdate (grace period), by the signer's country",
            ["country"],
            registry=self.registry,
        )
        self.submissions = Counter(
            "exchange_submissions_total",
            "Submissions from ministry systems, by outcome: accepted, repeated, or the refusal's reason code",
            ["outcome"],
            registry=self.registry,
        )
        self.receipts_outstanding = Gauge(
            "exchange_receipts_outstanding",
            "Sent messages still waiting for a receipt",
            registry=self.registry,
        )
        self.receipt_latency = Histogram(
            "exchange_receipt_latency_seconds",
            "Time from publish to receipt",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30, 300, 3600),
            registry=self.registry,
        )
