"""Fixtures of the exchange tests: a two-country exchange on the local RabbitMQ, the session's link.

Both fail the run, never skip, when RabbitMQ is missing (`tests/support/`).
"""

from tests.support.exchange import dev_exchange, exchange, gateways
from tests.support.rabbit import rabbit_link, ru_gateway, tj_gateway

__all__ = ["dev_exchange", "exchange", "gateways", "rabbit_link", "ru_gateway", "tj_gateway"]
