"""Timing from the gateways' own log events, so the benchmark measures the gateway as shipped.

The gateway logs `message.accepted` once the RECEIVED entry is durable in the receiver's audit log
and `receipt.received` once the sender has audited the receipt and closed its outbox record. This
structlog processor notes when those happen (CLOCK_MONOTONIC, the same clock in the receiving
gateway's process, `benchmarks.peer`) and drops every info event (the benchmark measures the
exchange, not a terminal); warnings and errors are still printed.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import defaultdict
from collections.abc import MutableMapping
from typing import Any

import structlog

from benchmarks.common import Countdown

ACCEPTED = "message.accepted"
RECEIPTED = "receipt.received"
REJECTED = "message.rejected"
WATCHED = (ACCEPTED, RECEIPTED, REJECTED)


class EventClock:
    def __init__(self) -> None:
        self.seen_at: dict[str, dict[str, float]] = defaultdict(dict)
        self.watchers: dict[str, list[Countdown]] = defaultdict(list)

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        name = event.get("event")
        if name in WATCHED:
            self.saw(str(name), str(event.get("message_id")), time.monotonic())
        return drop_info_events(logger, method, event)

    def saw(self, name: str, message_id: str, at: float) -> None:
        """Note an event of this process or, with its own monotonic time, of the peer process."""
        if message_id in self.seen_at[name]:
            return
        self.seen_at[name][message_id] = at
        for countdown in self.watchers[name]:
            countdown.tick()

    def count(self, name: str) -> int:
        return len(self.seen_at[name])


_BELOW_WARNING = frozenset(
    name.lower() for name, level in logging.getLevelNamesMapping().items() if level < logging.WARNING
)


def drop_info_events(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if method in _BELOW_WARNING:
        raise structlog.DropEvent
    return event


def install_event_clock() -> EventClock:
    clock = EventClock()
    watch_log_events(clock)
    return clock


def watch_log_events(watcher: structlog.types.Processor) -> None:
    """Route every gateway log event of this process through `watcher`, which drops the info ones."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            watcher,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
