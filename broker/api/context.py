"""Everything a request handler of the API needs, made once when the service starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request

from broker.api.gateway_link import GatewayLink
from broker.api.limits import RateLimiter
from broker.api.records import Records
from broker.api.waiting import ReceiptWaiters
from broker.core.agreement_set import Agreements
from broker.core.errors import ConfigError, Reason
from broker.exchange.ministries import submitting_authorities
from broker.state.api_tokens import TokenFile
from broker.state.keystore import KeyStore
from broker.state.outbox import OutboxReader
from broker.state.settings import ExchangeSettings

if TYPE_CHECKING:
    from broker.api.console.services import ConsoleServices


@dataclass
class ApiContext:
    settings: ExchangeSettings
    agreement: Agreements
    tokens: TokenFile
    rate: RateLimiter
    failures: RateLimiter
    link: GatewayLink
    records: Records
    waiters: ReceiptWaiters
    ministries: tuple[str, ...] = field(default=())
    console: ConsoleServices | None = None

    @classmethod
    def from_settings(cls, settings: ExchangeSettings) -> ApiContext:
        agreement = settings.agreement_set()
        keystore = KeyStore(root=settings.keys_dir)
        outbox = OutboxReader(settings.country_state_dir / "outbox.sqlite")
        waiters = ReceiptWaiters(outbox)
        return cls(
            settings=settings,
            agreement=agreement,
            tokens=TokenFile(settings.api_tokens_path),
            rate=RateLimiter(rate=settings.api_requests_per_s, burst=settings.api_burst),
            # A client without a valid token is a caller too, known by its address.
            failures=RateLimiter(rate=settings.api_requests_per_s, burst=settings.api_burst),
            link=GatewayLink(settings, agreement=agreement, on_receipt=waiters.notify),
            records=Records(settings, agreement=agreement, keystore=keystore, outbox=outbox),
            waiters=waiters,
            ministries=submitting_authorities(agreement, settings.country),
        )

    async def start(self) -> None:
        from broker.api.console.services import ConsoleServices  # noqa: PLC0415 - the console imports this module

        self.waiters.start()
        self.console = ConsoleServices.create(self.settings, agreement=self.agreement, records=self.records)

    async def close(self) -> None:
        await self.waiters.close()
        await self.link.close()
        if self.console is not None:
            await self.console.close()


def api_context(request: Request) -> ApiContext:
    context = getattr(request.app.state, "context", None)
    if not isinstance(context, ApiContext):
        raise ConfigError(Reason.CONFIG_INVALID, "this API application was made without settings")
    return context
