"""Is a gateway fit to serve? Readiness for operators and orchestrators (`status_server` serves it).

Ready means each of these holds now:

- `broker`: a round trip on the gateway's own connection (a passive declare of `inbound`);
- `audit`: the audit store would take a write (`AuditStore.check_writable`);
- `keys`: the gateway's signing certificate is valid now and the peer country's CA is loaded;
- `peer_link`: the shovel carrying `outbound.<peer>` to the peer's broker reports `running`, as this
  broker's management API shows it to the gateway's own RabbitMQ user. RabbitMQ shows shovel status
  to `monitoring` users only, so `topology apply` gives the gateway's user that tag: it reads node
  metadata and changes nothing, and the gateway holds no administrator credentials
  (docs/decisions.md, "Health and readiness").

Each check has a deadline; one that fails or hangs makes the gateway not ready and says why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote, urlsplit

import httpx

from broker.core.errors import ExchangeError
from broker.exchange.management_api import ApiErrors, ManagementEndpoint, path_of
from broker.exchange.topology import INBOUND, shovel_name
from broker.state.settings import ExchangeSettings

if TYPE_CHECKING:
    from broker.exchange.gateway.context import GatewayContext

CHECK_TIMEOUT_S = 3.0
# aio-pika's defaults for a URL that names no user: the same login reads the management API.
DEFAULT_LOGIN = ("guest", "guest")


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
    """This country's shovel to the peer, as this broker's management API shows it to `endpoint.user`."""

    def __init__(self, *, endpoint: ManagementEndpoint, vhost: str, shovel: str) -> None:
        self.endpoint = endpoint
        self.vhost = vhost
        self.shovel = shovel
        self._errors = ApiErrors(where=endpoint.where)
        self._errors.remember(endpoint.password)
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def from_settings(cls, settings: ExchangeSettings, peer_country: str) -> PeerLink:
        """Logged in as the gateway's own broker user, at `settings.management_api_url`."""
        parts = urlsplit(settings.amqp_url)
        endpoint = ManagementEndpoint(
            url=settings.management_api_url,
            user=unquote(parts.username) if parts.username else DEFAULT_LOGIN[0],
            password=unquote(parts.password) if parts.password else DEFAULT_LOGIN[1],
            ca_file=settings.management_api_ca_file,
            timeout_s=CHECK_TIMEOUT_S,
            plaintext_hosts=settings.plaintext_hosts,
        )
        vhost = unquote(parts.path.removeprefix("/")) or "/"
        return cls(endpoint=endpoint, vhost=vhost, shovel=shovel_name(settings.country, peer_country))

    async def check(self) -> Check:
        action = f"reading the status of shovel {self.shovel} in {self.vhost}"
        if self._client is None:
            self._client = self.endpoint.async_client()
        try:
            response = await self._client.get(path_of("shovels", self.vhost))
        except httpx.HTTPError as exc:
            raise self._errors.unreachable(exc, action) from None
        self._errors.check(response, action, user=self.endpoint.user)
        listing = self._errors.json_of(response, action)
        states = [entry for entry in listing if isinstance(entry, dict) and entry.get("name") == self.shovel]
        if not states:
            return Check(False, f"no shovel {self.shovel} in vhost {self.vhost}")
        state = str(states[0].get("state", ""))
        reason = str(states[0].get("reason", ""))
        return Check(state == "running", f"shovel {self.shovel}: {state} {reason}".strip())

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


async def check_readiness(
    ctx: GatewayContext, link: PeerLink | None, *, timeout_s: float = CHECK_TIMEOUT_S
) -> Readiness:
    checks: dict[str, Callable[[], Awaitable[Check]]] = {
        "broker": lambda: _broker(ctx),
        "audit": lambda: _audit(ctx),
        "keys": lambda: _keys(ctx),
    }
    if link is not None:
        checks["peer_link"] = link.check
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
    if not ctx.trust.anchors(ctx.peer_country):
        return Check(False, f"no CA of {ctx.peer_country} loaded")
    return Check(True, f"{ctx.gateway_id} certificate valid until {leaf.not_valid_after_utc:%Y-%m-%d}")
