"""A complete development exchange on one RabbitMQ node: PKI, topology, settings for both gateways.

Used by `broker demo` and by the integration tests. Production sets the same things up with
`broker keys ...` and `broker topology apply --local <country>` on each side.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker.core.agreement import Agreement, load_agreement, load_shipped_agreement, shipped_agreement_ids
from broker.core.agreement_set import is_agreement_path
from broker.core.errors import ConfigError, Reason
from broker.exchange.plan import BrokerPlan
from broker.exchange.provisioning import apply_topology, needed_users, plans_for, remove_plans
from broker.exchange.rabbit_admin import RabbitAdmin
from broker.exchange.topology import CountryBroker
from broker.state.keystore import KeyStore
from broker.state.settings import ExchangeSettings
from broker.state.settings_file import render_settings, write_settings


@dataclass(frozen=True)
class DevExchange:
    agreement: Agreement
    keystore: KeyStore
    brokers: dict[str, CountryBroker]  # by upper-case country code
    plans: tuple[BrokerPlan, ...]
    passwords: dict[str, str]
    settings: dict[str, ExchangeSettings]  # by upper-case country code
    # With several agreements (three countries or more): all of them; `agreement` is the first.
    agreements: tuple[Agreement, ...] = ()

    def gateway_url(self, country: str) -> str:
        broker = self.brokers[country]
        return broker.uri_for(user=broker.gateway_user, password=self.passwords[broker.gateway_user])

    def teardown(self, admin: RabbitAdmin | None = None) -> list[str]:
        """Delete this exchange's vhosts and users (nothing else on the node); what was deleted."""
        with nullcontext(admin) if admin else RabbitAdmin() as used:
            return remove_plans(self.plans, admin=used)


def dev_brokers(
    agreement: Agreement,
    *,
    vhost_prefix: str,
    rabbit_host: str,
    countries: Sequence[str] = (),
    rabbit_nodes: tuple[str, ...] = (),
) -> dict[str, CountryBroker]:
    """Each country's broker of a development exchange: vhost `<prefix><cc>` on one node, or on the
    cluster of `rabbit_host` and `rabbit_nodes` (its other nodes, host:port)."""
    return {
        country: CountryBroker(
            country=country.lower(),
            url=f"amqp://{rabbit_host}/{vhost_prefix}{country.lower()}",
            nodes=rabbit_nodes,
        )
        for country in (countries or agreement.countries)
    }


def remove_dev_exchange(
    *,
    vhost_prefix: str,
    rabbit_host: str = "127.0.0.1:5672",
    admin: RabbitAdmin | None = None,
    countries: Sequence[str] = (),
) -> list[str]:
    """Delete what `provision_dev_exchange` with this prefix made, also after it stopped half-way."""
    if not vhost_prefix:
        raise ConfigError(
            Reason.CONFIG_INVALID, "a development exchange is removed by its prefix, and this one has none"
        )
    brokers = dev_brokers(
        load_agreement(), vhost_prefix=vhost_prefix, rabbit_host=rabbit_host, countries=countries
    )
    # Every country's vhost and users, with the submitting users of the shipped agreements among them.
    within = [a for a in shipped_agreements_of_any() if set(a.countries) <= set(brokers)]
    plans = plans_for(list(brokers.values()), None, agreements=within if len(brokers) > 2 else ())
    with nullcontext(admin) if admin else RabbitAdmin() as used:
        return remove_plans(plans, admin=used)


DEV_CRL_VALIDITY_DAYS = 365


def create_dev_pki(
    keystore: KeyStore, agreement: Agreement, *, now: datetime, done: set[str] | None = None
) -> None:
    """A CA per country and a certificate for every authority of the agreement (valid from an hour ago).

    `done`: countries and authorities already issued (by another agreement of the same exchange)."""
    start = now - timedelta(hours=1)
    done = set() if done is None else done
    for country in agreement.countries:
        if country not in done:
            keystore.init_country(country, now=start)
            done.add(country)
    for authority in agreement.authorities:
        if authority.id in done:
            continue
        done.add(authority.id)
        keystore.issue(authority.id, authority.country, now=start, display_name=authority.name)
        keystore.issue_encryption(authority.id, now=start)  # personal data is sealed to this key


def write_settings_file(path: Path, settings: ExchangeSettings) -> None:
    """A gateway.toml the CLI reads (`broker gateway --config ...`) with every setting that differs from
    its default, so a gateway started from it behaves like the one built in-process. Paths are written
    absolute: a relative one would be read relative to the file's folder. It holds a password, so 0600."""
    values = settings.model_dump(exclude_defaults=True)
    for always in ("country", "amqp_url", "keys_dir", "state_dir"):
        values[always] = getattr(settings, always)
    values = {name: value.resolve() if isinstance(value, Path) else value for name, value in values.items()}
    write_settings(path, render_settings(values, header="A development gateway's settings (broker demo)."))


async def provision_dev_exchange(
    workdir: Path,
    *,
    vhost_prefix: str = "",
    rabbit_host: str = "127.0.0.1:5672",
    rabbit_nodes: tuple[str, ...] = (),
    admin: RabbitAdmin | None = None,
    now: datetime | None = None,
    agreements: Sequence[str] = (),
    **setting_overrides: object,
) -> DevExchange:
    """Keys under `workdir/keys`, state under `workdir/<cc>/`, vhosts `<prefix>tj` and `<prefix>ru`.

    Users are named after the vhosts, so a prefix keeps the whole exchange apart from any other on
    the node; `DevExchange.teardown` (or `remove_dev_exchange` with the prefix) deletes it again.

    `agreements` (shipped ids or agreement files): an exchange of every country they name, each
    gateway serving the agreements its country is party to; default: the shipped TJ-RU one.
    """
    loaded = [_load_entry(entry) for entry in agreements] or [load_agreement()]
    agreement = loaded[0]
    countries = tuple(dict.fromkeys(c for a in loaded for c in a.countries))
    # Nobody re-issues a development CRL: it lasts as long as the certificates, so a gateway does not
    # refuse the dev exchange with `crl.stale` a month after it was set up (or a test dated it back).
    keystore = KeyStore(root=workdir / "keys", crl_validity_days=DEV_CRL_VALIDITY_DAYS)
    issued: set[str] = set()
    for each in loaded:
        create_dev_pki(keystore, each, now=now or datetime.now(UTC), done=issued)
    brokers = dev_brokers(
        agreement,
        vhost_prefix=vhost_prefix,
        rabbit_host=rabbit_host,
        countries=countries,
        rabbit_nodes=rabbit_nodes,
    )
    plans = tuple(
        plans_for(list(brokers.values()), None, agreement=agreement, agreements=loaded if agreements else ())
    )
    passwords = {user: secrets.token_urlsafe(18) for user in needed_users(plans)}
    secrets_path = workdir / "rabbitmq-secrets.json"
    secrets_path.touch(mode=0o600, exist_ok=True)
    secrets_path.write_text(json.dumps(passwords, indent=2), encoding="utf-8")
    with nullcontext(admin) if admin else RabbitAdmin() as used:
        await apply_topology(plans=plans, passwords=passwords, admin=used)
    exchange_settings: dict[str, ExchangeSettings] = {}
    for country, broker in brokers.items():
        if agreements:  # each country serves the agreements it is party to, and no other
            setting_overrides["agreements"] = tuple(
                entry for entry, each in zip(agreements, loaded, strict=True) if country in each.countries
            )
        settings = ExchangeSettings.load(
            None,
            country=country,
            amqp_url=broker.uri_for(user=broker.gateway_user, password=passwords[broker.gateway_user]),
            keys_dir=workdir / "keys",
            state_dir=workdir,
            **({"amqp_failover_hosts": rabbit_nodes} if rabbit_nodes else {}),
            **setting_overrides,
        )
        write_settings_file(workdir / country.lower() / "gateway.toml", settings)
        exchange_settings[country] = settings
    return DevExchange(
        agreement=agreement,
        keystore=keystore,
        brokers=brokers,
        plans=plans,
        passwords=passwords,
        settings=exchange_settings,
        agreements=tuple(loaded) if agreements else (),
    )


def shipped_agreements_of_any() -> list[Agreement]:
    return [load_shipped_agreement(agreement_id) for agreement_id in shipped_agreement_ids()]


def _load_entry(entry: str) -> Agreement:
    """One `agreements` entry (a shipped id or a file) as an Agreement."""
    if is_agreement_path(entry):
        return load_agreement(Path(entry))
    return load_shipped_agreement(entry)
