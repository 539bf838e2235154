"""Fixtures shared by every test module: the agreement and a development PKI for both countries.

The PKI is built once per session at a fixed moment (`pki_now`), so tests that seal messages pick
their `created_at` relative to it and never depend on the wall clock. It is shared: a test that
rotates or revokes keys builds its own `KeyStore` instead of changing this one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from broker.core.agreement import Agreement, load_agreement
from broker.core.trust import TrustStore
from broker.state.keystore import KeyStore
from tests.support.browser import browser
from tests.support.console import console_site
from tests.support.exchange import dev_exchange, exchange, gateways
from tests.support.http_api import api_gateways, http_api
from tests.support.rabbit import rabbit_link, ru_gateway, tj_gateway

# Every CA and authority certificate of the session PKI starts here; authority certificates last a
# year (KeyStore's default), CAs ten years.
PKI_NOW = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="session")
def agreement() -> Agreement:
    """The shipped Tajikistan–Russia agreement."""
    return load_agreement()


@pytest.fixture(scope="session")
def pki_now() -> datetime:
    """The moment the session PKI was issued; authority certificates are valid for a year after it."""
    return PKI_NOW


@pytest.fixture(scope="session")
def dev_pki(tmp_path_factory: pytest.TempPathFactory, agreement: Agreement, pki_now: datetime) -> KeyStore:
    """A key store holding both countries' CAs and a signing certificate for every authority."""
    root: Path = tmp_path_factory.mktemp("keys")
    # Its CRL is current for the whole year the certificates are valid: tests judge arrival at any
    # moment of it, and a stale CRL (`crl.stale`) is tested with key stores of its own.
    store = KeyStore(root=root, crl_validity_days=366)
    for country in agreement.countries:
        store.init_country(country, now=pki_now)
    for authority in agreement.authorities:
        store.issue(authority.id, authority.country, now=pki_now, display_name=authority.name)
    return store


@pytest.fixture(scope="session")
def trust(dev_pki: KeyStore, agreement: Agreement) -> TrustStore:
    """Anchors and CRLs of both countries of the agreement, as either gateway would hold them."""
    return dev_pki.trust_store(agreement.countries)


@pytest.fixture
def cli_keeps_test_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command run in-process configures structlog for its process (level, stderr), which would
    silence the `capture_logs` of every later test: leave the test's logging alone."""
    for module in ("broker.cli.common", "broker.cli.topology"):
        monkeypatch.setattr(f"{module}.configure_logging", lambda *_, **__: None)


# The real-broker fixtures live in tests/support; registered here for every test package. Each is
# built only when a test asks for it.
__all__ = [
    "api_gateways",
    "browser",
    "console_site",
    "dev_exchange",
    "exchange",
    "gateways",
    "http_api",
    "rabbit_link",
    "ru_gateway",
    "tj_gateway",
]
