"""The per-caller token bucket, on a clock the test moves (no timing of the machine)."""

from __future__ import annotations

import pytest

from broker.api.limits import RateLimiter
from broker.api.problems import ApiProblem, status_of


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_refills_at_its_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    for _ in range(3):
        limiter.check("a", who="A")

    with pytest.raises(ApiProblem) as refused:
        limiter.check("a", who="A")
    limiter.check("b", who="B")  # another caller has its own bucket
    clock.now += 0.5  # one token at 2 per second
    limiter.check("a", who="A")

    assert (refused.value.status, refused.value.reason) == (429, "api.rate_limited")
    assert dict(refused.value.headers or {})["Retry-After"] == "1"
    assert "A is over 2 requests per second" in refused.value.detail


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        ("schema.invalid", 422),
        ("agreement.rule", 422),
        ("policy.sender_not_allowed", 403),
        ("auth.unauthenticated", 401),
        ("auth.forbidden", 403),
        ("submission.oversized", 413),
        ("submission.request_reused", 409),
        ("submission.no_gateway", 503),
        ("transport.unavailable", 503),
        ("receipt.pending", 404),
        ("internal.error", 500),
        ("no.such_family", 500),
    ],
)
def test_each_reason_family_has_its_status(reason: str, status: int) -> None:
    assert status_of(reason) == status
