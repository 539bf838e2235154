"""A country's gateway, split by role; `Gateway` wires the roles and owns start and stop."""

from broker.exchange.gateway.assembly import GatewayRun, gateway_from_settings, open_audit_store
from broker.exchange.gateway.context import Clock, utc_now
from broker.exchange.gateway.gateway import Gateway
from broker.exchange.gateway.receiving import OWN_FAILURE_PAUSES_S, PerMessageLocks
from broker.exchange.gateway.sending import SendResult

__all__ = [
    "OWN_FAILURE_PAUSES_S",
    "Clock",
    "Gateway",
    "GatewayRun",
    "PerMessageLocks",
    "SendResult",
    "gateway_from_settings",
    "open_audit_store",
    "utc_now",
]
