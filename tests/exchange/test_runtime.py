"""How a gateway process runs: uvloop where installed (asyncio's loop otherwise), a tuned collector."""

from __future__ import annotations

import asyncio
import gc
import importlib
from collections.abc import Iterator
from types import ModuleType

import pytest

from broker.exchange import runtime


@pytest.fixture
def restored_process() -> Iterator[None]:
    """Put back the loop policy and the collector as they were, for the tests that follow."""
    policy = asyncio.get_event_loop_policy()
    thresholds = gc.get_threshold()
    yield
    asyncio.set_event_loop_policy(policy)
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_process")
def test_the_gateway_runs_on_uvloop_where_it_is_installed() -> None:
    assert runtime.use_fast_event_loop() == "uvloop"  # a dependency of the project

    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert asyncio.run(loop_module()).startswith("uvloop")


@pytest.mark.usefixtures("restored_process")
def test_without_uvloop_the_standard_loop_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = importlib.import_module

    def no_uvloop(name: str, package: str | None = None) -> ModuleType:
        if name == "uvloop":
            raise ImportError("uvloop is not installed here")
        return real_import(name, package)

    monkeypatch.setattr(importlib, "import_module", no_uvloop)
    before = asyncio.get_event_loop_policy()
    assert runtime.use_fast_event_loop() == "asyncio"
    assert asyncio.get_event_loop_policy() is before

    async def loop_class() -> type[asyncio.AbstractEventLoop]:
        return type(asyncio.get_running_loop())

    assert issubclass(asyncio.run(loop_class()), asyncio.BaseEventLoop)


@pytest.mark.usefixtures("restored_process")
def test_after_start_up_the_collector_skips_what_exists_and_runs_less_often() -> None:
    gc.unfreeze()
    runtime.tune_for_long_run()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (runtime.GEN0_THRESHOLD, runtime.GEN1_THRESHOLD, runtime.GEN2_THRESHOLD)
    assert runtime.GEN0_THRESHOLD > 700  # CPython's default, which collects several times per message
