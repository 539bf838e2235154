"""What the console's pages need beyond the API's context, made when the service starts."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from broker.api.console.alerts import Alerts
from broker.api.console.desk import OperatorDesk
from broker.api.console.store import ConsoleStore
from broker.api.console.verifying import Verifications
from broker.api.records import Records
from broker.core.agreement import Agreement
from broker.core.agreement_set import AgreementSet
from broker.core.errors import ConfigError, Reason
from broker.state.keystore import KeyStore
from broker.state.settings import ExchangeSettings

STORE_FILE = "console.sqlite"
# Authorities with a subscriber queue of their own, whose depths the overview shows.
SUBSCRIBING_ROLES = {"competent_ministry", "interior_ministry", "consulate"}


@dataclass
class ConsoleServices:
    settings: ExchangeSettings
    agreement: Agreement | AgreementSet
    keystore: KeyStore
    records: Records
    desk: OperatorDesk
    store: ConsoleStore
    alerts: Alerts
    verifications: Verifications

    @classmethod
    def create(
        cls, settings: ExchangeSettings, *, agreement: Agreement | AgreementSet, records: Records
    ) -> ConsoleServices:
        keystore = KeyStore(root=settings.keys_dir)
        store = ConsoleStore(settings.country_state_dir / STORE_FILE)
        local = tuple(
            a.id
            for a in agreement.authorities
            if a.country == settings.country and set(a.roles) & SUBSCRIBING_ROLES
        )
        return cls(
            settings=settings,
            agreement=agreement,
            keystore=keystore,
            records=records,
            desk=OperatorDesk(
                settings, peer_countries=peers_of(agreement, settings.country), local_authorities=local
            ),
            store=store,
            alerts=Alerts(records=records, store=store),
            verifications=Verifications(records=records, trust=keystore.trust_store(agreement.countries)),
        )

    async def close(self) -> None:
        await self.verifications.close()
        await self.desk.close()
        self.store.close()


def peers_of(agreement: Agreement | AgreementSet, country: str) -> tuple[str, ...]:
    """Every peer country: one under a single agreement, each agreement's under a set."""
    return tuple(c for c in agreement.countries if c != country)


def console_services(request: Request) -> ConsoleServices:
    context = getattr(request.app.state, "context", None)
    services = getattr(context, "console", None)
    if not isinstance(services, ConsoleServices):
        raise ConfigError(Reason.CONFIG_INVALID, "this application was made without the console")
    return services
