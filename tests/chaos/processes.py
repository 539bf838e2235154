"""Gateway and subscriber processes of a chaos run, started, killed and restarted by the test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


class Worker:
    """One child process (a gateway or a subscriber) with its output appended to a log file."""

    def __init__(
        self, *, name: str, script: str, arguments: list[str], env: dict[str, str], log: Path
    ) -> None:
        self.name = name
        self._argv = [sys.executable, str(HERE / script), *arguments]
        self._env = {**os.environ, **env}
        self._log = log
        self._process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.kills = 0
        self.held = False  # True while a test keeps it down on purpose

    async def start(self, *extra: str) -> None:
        with self._log.open("ab") as output:
            self._process = await asyncio.create_subprocess_exec(
                *self._argv, *extra, cwd=REPO, env=self._env, stdout=output, stderr=output
            )
        self.starts += 1

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def exited(self) -> bool:
        return self._process is None or self._process.returncode is not None

    async def kill(self) -> None:
        """SIGKILL: no clean-up, no acks, no flush, whatever it was in the middle of."""
        if self._process is not None and self._process.returncode is None:
            self._process.send_signal(signal.SIGKILL)
            await self._process.wait()
            self.kills += 1

    async def stop(self, timeout_s: float = 20.0) -> None:
        if self._process is None or self._process.returncode is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout_s):
                await self._process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()

    def log_tail(self, size: int = 3000) -> str:
        text = self._log.read_text(encoding="utf-8", errors="replace") if self._log.exists() else ""
        return text[-size:]
