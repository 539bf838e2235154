"""A country's gateway, split by role; `Gateway` wires the roles and owns start and stop."""

from broker.exchange.gateway.assembly import GatewayRun, gateway_from_settings, open_audit_store
from broker.exchange.gateway.context import Clock, GatewayContext, utc_now
from broker.exchange.gateway.gateway import Gateway
from broker.exchange.gateway.message_locks import PerMessageLocks
from broker.exchange.gateway.receiving import OWN_FAILURE_PAUSES_S
from broker.exchange.gateway.sending import SendOptions, SendResult

__all__ = [
    "OWN_FAILURE_PAUSES_S",
    "Clock",
    "Gateway",
    "GatewayContext",
    "GatewayRun",
    "PerMessageLocks",
    "SendOptions",
    "SendResult",
    "gateway_from_settings",
    "open_audit_store",
    "utc_now",
]
