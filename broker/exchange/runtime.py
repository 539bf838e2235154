"""How a long-lived gateway process runs: its event loop and its garbage collector.

- **Event loop**: uvloop where it is installed (a libuv loop: less CPU per callback, socket read and
  timer, which a gateway does several of per message), the standard asyncio loop otherwise. Nothing
  in the gateway depends on which one runs.
- **Garbage collector**: a gateway allocates many short-lived objects per message and keeps a large,
  stable set (certificates, models, the agreement, caches) for its whole life. Start-up objects are
  moved out of the collector's sight once running (`gc.freeze`), and the youngest generation is
  collected less often, so each collection walks fewer objects. Reference counting still frees
  almost everything at once; only cycles wait a little longer.
"""

from __future__ import annotations

import asyncio
import gc
import importlib

# Young-generation threshold: CPython's default is 700 allocations; a gateway handling a message
# allocates thousands, so the default collects several times per message.
GEN0_THRESHOLD = 50_000
GEN1_THRESHOLD = 20
GEN2_THRESHOLD = 100


def event_loop_name() -> str:
    """`uvloop` when it is installed, else `asyncio`."""
    try:
        importlib.import_module("uvloop")
    except ImportError:
        return "asyncio"
    return "uvloop"


def use_fast_event_loop() -> str:
    """Make this process's next event loops uvloop ones where it is installed; return which."""
    name = event_loop_name()
    if name == "uvloop":
        asyncio.set_event_loop_policy(importlib.import_module("uvloop").EventLoopPolicy())
    return name


def tune_for_long_run() -> None:
    """Call once start-up is done: freeze what exists now and collect the young generation rarely."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
