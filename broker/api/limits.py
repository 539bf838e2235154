"""What keeps one caller from taking the API down: rate limits, a body size limit, a request timeout.

- Rate: a token bucket per caller (the authenticated authority; for failed logins, the client's
  address), refilled at `api_requests_per_s` up to `api_burst`. Over it: 429 `api.rate_limited`
  with `Retry-After`. In-process: one API process per country.
- Size: a body over the exchange's `max_message_bytes` is refused 413 (`submission.oversized`) by
  its Content-Length before it is read, or as soon as the bytes read pass the limit.
- Time: a request still running after `api_request_timeout_s` is answered 504 `api.timeout`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.api.problems import ApiProblem
from broker.core.errors import Reason

# Buckets kept at most; the least recently used go first (a full bucket forgets nothing by going).
MAX_BUCKETS = 10_000


class TokenBucket:
    def __init__(self, *, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._updated = now

    def take(self, now: float) -> float:
        """0 when a request may go now (one token taken), else the seconds until one may."""
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate


class RateLimiter:
    def __init__(self, *, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def check(self, key: str, *, who: str) -> None:
        """Take a token for `key`, or raise 429 naming `who` and when to come back."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(rate=self._rate, burst=self._burst, now=now)
            while len(self._buckets) > MAX_BUCKETS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        wait = bucket.take(now)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            raise ApiProblem(
                429,
                Reason.API_RATE_LIMITED,
                f"{who} is over {self._rate:g} requests per second (burst {self._burst}); "
                f"come back in {retry_after} s",
                headers={"Retry-After": str(retry_after)},
            )


Responder = Callable[[Scope, ApiProblem], ASGIApp]


class RequestLimits:
    """Pure ASGI middleware (the body is counted as it streams, not buffered first)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, timeout_s: float, respond: Responder) -> None:
        self._app = app
        self._max = max_body_bytes
        self._timeout_s = timeout_s
        self._respond = respond

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self._max:
            await self._refuse(scope, receive, send, self._too_large(declared))
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self._max:
                    raise self._too_large(seen)  # an HTTPException: FastAPI passes it on to our handler
            return message

        async def sending(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            async with asyncio.timeout(self._timeout_s):
                await self._app(scope, counted, sending)
        except TimeoutError:
            if not started:
                problem = ApiProblem(
                    504, Reason.API_TIMEOUT, f"the request took longer than {self._timeout_s:g} s"
                )
                await self._refuse(scope, receive, send, problem)

    def _too_large(self, size: int) -> ApiProblem:
        return ApiProblem(
            413,
            Reason.SUBMISSION_OVERSIZED,
            f"the request body is {size} bytes or more, over the exchange's message limit of {self._max}",
        )

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, problem: ApiProblem) -> None:
        await self._respond(scope, problem)(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
