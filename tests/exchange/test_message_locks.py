"""Copies of one message are handled one at a time, however many arrive at once."""

from __future__ import annotations

import asyncio
from uuid import uuid4

from broker.exchange.gateway import PerMessageLocks


async def test_third_copy_waits_for_the_first_even_after_the_second_queued() -> None:
    locks = PerMessageLocks()
    message_id = uuid4()
    inside = 0
    most_inside = 0

    async def handle() -> None:
        nonlocal inside, most_inside
        async with locks.hold(message_id):
            inside += 1
            most_inside = max(most_inside, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(handle() for _ in range(5)))
    assert most_inside == 1
    assert len(locks) == 0  # nothing kept once every copy is done


async def test_different_messages_do_not_wait_for_each_other() -> None:
    locks = PerMessageLocks()
    first_entered = asyncio.Event()
    release = asyncio.Event()

    async def slow() -> None:
        async with locks.hold(uuid4()):
            first_entered.set()
            await release.wait()

    task = asyncio.create_task(slow())
    await first_entered.wait()
    async with asyncio.timeout(1):
        async with locks.hold(uuid4()):
            pass
    release.set()
    await task
    assert len(locks) == 0
