"""`broker send` as a client of the running gateway: submit, print the message id, wait for the receipt.

Standard output gets JSON lines a script can read: the message id as soon as the gateway accepted
the submission, the peer's verdict when its receipt arrives. Standard error says what it waits for
and for how long: a live status line on a terminal, a line every few seconds in a pipe or file.
Ctrl-C stops waiting, never the message: it prints the `broker status` command that follows it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Awaitable
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from rich.markup import escape
from rich.status import Status

from broker.cli.common import exit_with
from broker.cli.output import err_console, print_error
from broker.core.errors import LocalError, Reason
from broker.exchange.submission import DEFAULT_SUBMISSION_TTL_S, Accepted, ReceiptNews, Refused, Submission

if TYPE_CHECKING:
    from broker.exchange.submitter import SubmissionClient

T = TypeVar("T")

# Default --timeout: the deadline of the most urgent type (a death notice is re-sent after 5 minutes).
DEFAULT_RECEIPT_WAIT_S = 300.0
# How long to wait for a gateway to consume submissions before saying none runs.
GATEWAY_PATIENCE_S = 5.0
# Beyond the submission's time to live: the gateway may take it at the last moment, then answer.
ANSWER_GRACE_S = 5.0
PIPE_PROGRESS_EVERY_S = 10.0
EXIT_INTERRUPTED = 130


class _Interrupted(Exception):
    """Ctrl-C (or SIGTERM) while waiting."""


class _Waiting:
    """`what: <elapsed> s` on standard error while a step takes its time.

    On a terminal a live status line. In a pipe or file a line after `quiet_s` seconds, then one
    every PIPE_PROGRESS_EVERY_S: a quick step leaves no line there, so a refusal stays one line.
    """

    def __init__(self, what: str, *, quiet_s: float = 0.0) -> None:
        self._what = what
        self._quiet_s = quiet_s
        self._started = time.monotonic()
        self._status: Status | None = None
        self._ticker: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _Waiting:
        if sys.stderr.isatty():
            self._status = err_console.status(escape(self._what))
            self._status.start()
        self._ticker = asyncio.create_task(self._tick())
        return self

    async def _tick(self) -> None:
        if self._status is None:
            await asyncio.sleep(self._quiet_s)
            err_console.print(escape(f"{self._what} ..."))
        every = 0.5 if self._status is not None else PIPE_PROGRESS_EVERY_S
        while True:
            await asyncio.sleep(every)
            line = escape(f"{self._what}: {self.elapsed:.0f} s")
            if self._status is not None:
                self._status.update(line)
            else:
                err_console.print(line)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._status is not None:
            self._status.stop()


async def _unless_interrupted(step: Awaitable[T], interrupted: asyncio.Event) -> T:
    task = asyncio.ensure_future(step)
    stop = asyncio.ensure_future(interrupted.wait())
    done, _ = await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    stop.cancel()
    if task in done:
        return task.result()
    task.cancel()
    raise _Interrupted


def _line(value: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _fail(reason: str, text: str) -> NoReturn:
    """One error line for a code our gateway or the peer sent (it may be newer than our `Reason`)."""
    print_error(f"[{reason}] {text}")
    raise typer.Exit(1)


async def submit_and_follow(
    *,
    url: str,
    user: str,
    country: str,
    submission: Submission,
    wait: bool,
    timeout_s: float,
    follow: str,
    ttl_s: float = DEFAULT_SUBMISSION_TTL_S,
) -> int:
    """Submit as `user`, print the id and the verdict; the exit status. `follow` has `{id}` to fill."""
    from broker.exchange.submitter import SubmissionClient  # noqa: PLC0415 - aio-pika only when sending

    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupted.set)
    request_id = submission.request_id
    client = await SubmissionClient.connect(url=url, user=user, country=country)
    accepted: Accepted | None = None
    try:
        if not await client.gateway_consumers():
            async with _Waiting(f"waiting for a gateway of {country} to take submissions", quiet_s=60):
                await _unless_interrupted(client.wait_for_gateway(patience_s=GATEWAY_PATIENCE_S), interrupted)
        await client.submit(submission, ttl_s=ttl_s)
        async with _Waiting(f"handing request {request_id} to the {country} gateway", quiet_s=2):
            first = await _unless_interrupted(
                client.answer(request_id, timeout_s=ttl_s + ANSWER_GRACE_S), interrupted
            )
        if first is None:
            exit_with(
                LocalError(
                    Reason.SUBMISSION_NO_GATEWAY,
                    f"the {country} gateway did not answer within {ttl_s + ANSWER_GRACE_S:g} s; unless it took "
                    f"the submission in time, it expired unsent. Submit again with --request-id {request_id} "
                    "to learn what became of it (the same request id is never sent twice)",
                )
            )
        if isinstance(first, Refused):
            _fail(first.reason, first.diagnostic)
        if not isinstance(first, Accepted):
            _fail(str(Reason.INTERNAL_ERROR), f"the gateway answered {first.status!r} before accepting")
        accepted = first
        _line(
            {
                "message_id": str(accepted.message_id),
                "sha256": accepted.sha256,
                "type": accepted.type,
                "sender": accepted.sender,
                "to": accepted.to,
                "repeated": accepted.repeated,
            }
        )
        if not wait:
            return 0
        return await _follow_receipt(client, request_id, accepted, timeout_s, follow, interrupted)
    except _Interrupted:
        if accepted is None:
            err_console.print(
                escape(
                    f"interrupted before the gateway answered request {request_id}: submit again with "
                    f"--request-id {request_id} to learn what became of it (it is never sent twice)"
                )
            )
        else:
            err_console.print(
                escape(
                    f"interrupted: {accepted.message_id} is on its way; follow it with "
                    f"`{follow.format(id=accepted.message_id)}`"
                )
            )
        return EXIT_INTERRUPTED
    finally:
        await client.close()


async def _follow_receipt(
    client: SubmissionClient,
    request_id: str,
    accepted: Accepted,
    timeout_s: float,
    follow: str,
    interrupted: asyncio.Event,
) -> int:
    message_id = accepted.message_id
    async with _Waiting(f"waiting for receipt of {message_id} from {accepted.to}") as waiting:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            news = await _unless_interrupted(client.answer(request_id, timeout_s=max(left, 0)), interrupted)
            if news is None:
                exit_with(
                    LocalError(
                        Reason.RECEIPT_PENDING,
                        f"no receipt for {message_id} within {timeout_s:g} s; it stays on its way "
                        f"(re-sent at its deadline): follow it with `{follow.format(id=message_id)}`",
                    )
                )
            if not isinstance(news, ReceiptNews):
                continue
            if not news.final:
                err_console.print(
                    escape(
                        f"{accepted.to} could not open it ({news.reason}); the gateway re-sends it at its deadline"
                    )
                )
                continue
            break
        elapsed = waiting.elapsed
    _line(
        {
            "message_id": str(message_id),
            "sha256": accepted.sha256,
            "verdict": news.verdict,
            "reason": news.reason,
            "audit_index": news.audit_index,
        }
    )
    if news.verdict != "accepted":
        _fail(
            news.reason or "receipt.rejected", f"{accepted.to} rejected {message_id}: {news.diagnostic or ''}"
        )
    err_console.print(escape(f"{news.verdict} by {accepted.to} after {elapsed:.1f} s"))
    return 0
