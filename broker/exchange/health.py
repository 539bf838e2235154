"""Is a gateway fit to serve? Readiness for operators and orchestrators (`status_server` serves it).

Ready means each of these holds now:

- `broker`: a round trip on the gateway's own connection (a passive declare of `inbound`);
- `audit`: the audit store would take a write (`AuditStore.check_writable`);
- `keys`: the gateway's signing certificate is valid now and every peer country's CA is loaded;
- `peer_link`: the shovel carrying `outbound.<peer>` to each peer's broker consumes that queue. A
  shovel consumes its source only once it is connected to both brokers, and its consumer goes when
  either connection does, so the queue's consumer count (a passive declare, which needs no right)
  says whether the link runs. The gateway's user needs no management API and no tag for it
  (docs/decisions.md, "Health and readiness").

Each check has a deadline; one that fails or hangs makes the gateway not ready and says why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from broker.core.errors import ExchangeError, TransportError
from broker.exchange.topology import INBOUND, outbound_queue, shovel_name
from broker.exchange.transport_api import Transport
from broker.state.settings import ExchangeSettings

if TYPE_CHECKING:
    from broker.exchange.gateway.context import GatewayContext

CHECK_TIMEOUT_S = 3.0


class Check(NamedTuple):
    """One check's verdict and what it saw."""

    ok: bool
    detail: str


@dataclass(frozen=True)
class Readiness:
    checks: dict[str, Check]
    # "active" or "standby" when the gateway runs under its writer lock (`gateway.standby`).
    role: str | None = None

    @property
    def ready(self) -> bool:
        return all(check.ok for check in self.checks.values())

    def report(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            **({} if self.role is None else {"role": self.role}),
            "checks": {name: {"ok": check.ok, "detail": check.detail} for name, check in self.checks.items()},
        }


class PeerLink:
    """This country's shovels to its peers (one per agreement), as the consumer on each
    `outbound.<peer>` shows it: the link is ready when every one runs."""

    def __init__(self, *, country: str, peer_country: str | Sequence[str]) -> None:
        peers = (peer_country,) if isinstance(peer_country, str) else tuple(peer_country)
        self.links = tuple((outbound_queue(peer.lower()), shovel_name(country, peer)) for peer in peers)

    @classmethod
    def from_settings(cls, settings: ExchangeSettings, peer_country: str | Sequence[str]) -> PeerLink:
        return cls(country=settings.country, peer_country=peer_country)

    async def check(self, transport: Transport) -> Check:
        checks = [await self._one(transport, queue, shovel) for queue, shovel in self.links]
        return Check(all(check.ok for check in checks), "; ".join(check.detail for check in checks))

    @staticmethod
    async def _one(transport: Transport, queue: str, shovel: str) -> Check:
        try:
            waiting, consumers = await transport.queue_counts(queue)
        except TransportError as missing:  # a peer whose topology was never applied here
            return Check(False, f"shovel {shovel}: no queue {queue} ({missing.diagnostic})")
        if consumers:
            return Check(True, f"shovel {shovel}: running (consuming {queue}, {waiting} waiting)")
        return Check(
            False,
            f"shovel {shovel}: not consuming {queue} (not connected to both brokers, or "
            f"stopped); {waiting} message(s) waiting",
        )

    async def close(self) -> None:
        """Nothing to release: the check uses the gateway's own connection."""


async def check_readiness(
    ctx: GatewayContext, link: PeerLink | None, *, timeout_s: float = CHECK_TIMEOUT_S
) -> Readiness:
    checks: dict[str, Callable[[], Awaitable[Check]]] = {
        "broker": lambda: _broker(ctx),
        "audit": lambda: _audit(ctx),
        "keys": lambda: _keys(ctx),
    }
    if link is not None:
        checks["peer_link"] = lambda: link.check(ctx.transport)
    results = await asyncio.gather(*(_within(check, timeout_s) for check in checks.values()))
    return Readiness(dict(zip(checks, results, strict=True)))


async def _within(check: Callable[[], Awaitable[Check]], timeout_s: float) -> Check:
    try:
        async with asyncio.timeout(timeout_s):
            return await check()
    except TimeoutError:
        return Check(False, f"no answer within {timeout_s} s")
    except ExchangeError as error:
        return Check(False, str(error))
    except Exception as exc:  # a health check reports what went wrong rather than fail the endpoint
        return Check(False, f"{type(exc).__name__}: {exc}")


async def _broker(ctx: GatewayContext) -> Check:
    _, consumers = await ctx.transport.queue_counts(INBOUND)
    return Check(True, f"connected; {INBOUND} has {consumers} consumer(s)")


async def _audit(ctx: GatewayContext) -> Check:
    await ctx.audit.check_writable()
    return Check(True, "writable")


async def _keys(ctx: GatewayContext) -> Check:
    now = ctx.clock()
    leaf = ctx.gateway_signer.chain[0]
    if not leaf.not_valid_before_utc <= now < leaf.not_valid_after_utc:
        return Check(
            False, f"the gateway's certificate is not valid now (until {leaf.not_valid_after_utc:%Y-%m-%d})"
        )
    missing = [peer for peer in ctx.peers if not ctx.trust.anchors(peer)]
    if missing:
        return Check(False, f"no CA of {', '.join(missing)} loaded")
    return Check(True, f"{ctx.gateway_id} certificate valid until {leaf.not_valid_after_utc:%Y-%m-%d}")
