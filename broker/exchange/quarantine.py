"""Quarantine operations shared by the CLI and tests."""

from __future__ import annotations

from broker.core.errors import LocalError, Reason
from broker.exchange.topology import INBOUND, QUARANTINE
from broker.exchange.transport_api import Transport


async def requeue(transport: Transport, *, message_id: str, country: str) -> None:
    """Move one message from quarantine back to the inbound exchange (published before it is removed)."""
    moved = await transport.move(
        source_queue=QUARANTINE, message_id=message_id, exchange=INBOUND, routing_key=country.lower()
    )
    if not moved:
        raise LocalError(Reason.CONFIG_INVALID, f"{message_id} is not in {country}'s quarantine")
