"""TLS to other hosts verifies the server: the shovel, the gateway's AMQP client and PostgreSQL.

Security review (issue 21), item 6. Erlang's AMQP client (the shovel) verified nothing on an
`amqps://` URI without `verify=verify_peer`, `cacertfile` and `server_name_indication`, so a man in
the middle of the cross-border link read the link user's password; asyncpg's default
`sslmode=prefer` checks neither certificate nor host name. Each test puts a man in the middle
(`tests/tls_mitm.py`) in front of the real component, presenting a certificate for the wrong host
or from the wrong CA, and checks that the client hangs up before it says anything, in particular
its password. A control with the right certificate shows the same path does connect.

The shovel runs inside the shared RabbitMQ node, in the session's test vhosts (`tests/support/rabbit.py`),
under a probe name of its own that is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from typer.testing import CliRunner

from broker.audit.stores.postgres import PostgresAuditStore
from broker.audit.stores.source import PostgresSource
from broker.cli.topology import topology_app
from broker.core.errors import AuditError, ConfigError, Reason, TransportError
from broker.exchange.plan import broker_plan
from broker.exchange.provisioning import parse_brokers
from broker.exchange.rabbit_admin import RabbitAdmin
from broker.exchange.topology import CountryBroker, ShovelSpec
from broker.exchange.transport import RabbitTransport
from tests.chaos.node import TlsFiles
from tests.support.tls_mitm import certificates, mitm, other_host_name

if TYPE_CHECKING:
    from tests.support.rabbit import RabbitLink


TJ = CountryBroker(country="tj", url="amqp://127.0.0.1:5672/tj")
PEER_CA = "/etc/rabbitmq/peer-ca.pem"


# -- the plan (pure) --------------------------------------------------------------------------------


class TestShovelUris:
    def test_a_tls_shovel_pins_peer_verification_and_the_host_name(self) -> None:
        ru = CountryBroker(country="ru", url=f"amqps://broker.ru.example:5671/ru?cacertfile={PEER_CA}")
        [shovel] = broker_plan(TJ, [ru]).shovels

        dest = urlsplit(shovel.definition({"tj-shovel": "g", "tj-link": "p"})["dest-uri"])

        assert dict(parse_qsl(dest.query)) == {
            "cacertfile": PEER_CA,
            "cafile": PEER_CA,  # the same CA for aio-pika, which reads another name
            "verify": "verify_peer",
            "server_name_indication": "broker.ru.example",
        }

    @pytest.mark.parametrize(
        "url",
        [
            "amqp://broker.ru.example:5672/ru",  # plaintext across the border
            "amqps://broker.ru.example:5671/ru",  # TLS with no CA: Erlang verifies nothing
            f"amqps://broker.ru.example/ru?cacertfile={PEER_CA}&verify=verify_none",
            f"amqps://broker.ru.example/ru?cacertfile={PEER_CA}&server_name_indication=disable",
            f"amqps://broker.ru.example/ru?cacertfile={PEER_CA}&server_name_indication=other.example",
        ],
    )
    def test_a_link_that_would_not_verify_the_peer_is_refused(self, url: str) -> None:
        with pytest.raises(ConfigError) as caught:
            CountryBroker(country="ru", url=url)
        assert caught.value.reason is Reason.CONFIG_INSECURE_TLS

    def test_plaintext_to_another_host_only_when_named(self) -> None:
        values = ["tj=amqp://rabbitmq-tj:5672/tj", "ru=amqp://rabbitmq-ru:5672/ru"]
        with pytest.raises(ConfigError) as caught:
            parse_brokers(values, plaintext_hosts=["rabbitmq-tj"])
        assert caught.value.reason is Reason.CONFIG_INSECURE_TLS
        assert "rabbitmq-ru" in caught.value.diagnostic

        tj, ru = parse_brokers(values, plaintext_hosts=["rabbitmq-tj", "RABBITMQ-RU"])
        assert (tj.allow_plaintext, ru.allow_plaintext) == (True, True)

    @pytest.mark.usefixtures("cli_keeps_test_logging")
    def test_topology_show_refuses_with_the_reason_and_accepts_named_plaintext(self) -> None:
        brokers = ["--broker", "tj=amqp://127.0.0.1:5672/tj", "--broker", "ru=amqp://10.1.2.3:5672/ru"]

        refused = CliRunner().invoke(topology_app, ["show", *brokers])
        allowed = CliRunner().invoke(
            topology_app, ["show", *brokers, "--plaintext-host", "10.1.2.3", "--json"]
        )

        assert refused.exit_code == 1
        assert "config.insecure_tls" in refused.output
        assert allowed.exit_code == 0, allowed.output
        assert json.loads(allowed.output)[0]["shovels"]["tj-to-ru"]["dest-uri"].startswith("amqp://")


# -- a man in the middle of the real clients ---------------------------------------------------------


@dataclass(frozen=True)
class Impostor:
    """What the man in the middle presents, and the CA the client is told to trust."""

    presented: TlsFiles
    trusted_ca: Path


@dataclass(frozen=True)
class Certificates:
    host: str
    address: str
    genuine: Impostor
    wrong_host: Impostor
    wrong_ca: Impostor


@pytest.fixture(scope="module")
def certs() -> Iterator[Certificates]:
    # Under /tmp, world-readable: the RabbitMQ node (user `rabbitmq`) reads the CA file.
    base = Path(tempfile.mkdtemp(prefix="tls-links-", dir="/tmp"))
    base.chmod(0o755)
    host, address = other_host_name()
    genuine = certificates(base / "genuine", host=host)
    other_name = certificates(base / "other-name", host="wrong.example")
    other_ca = certificates(base / "other-ca", host=host)
    yield Certificates(
        host=host,
        address=address,
        genuine=Impostor(presented=genuine, trusted_ca=genuine.ca_cert),
        # A certificate from the CA the client trusts, but for another host.
        wrong_host=Impostor(presented=other_name, trusted_ca=other_name.ca_cert),
        # A certificate for the right host, from a CA the client does not trust.
        wrong_ca=Impostor(presented=other_ca, trusted_ca=genuine.ca_cert),
    )
    shutil.rmtree(base)


@dataclass(frozen=True)
class ProbeShovel(ShovelSpec):
    """The link's shovel under another name, so the session's own `tj-to-ru` keeps running."""

    probe: str = "tls-probe"

    @property
    def name(self) -> str:
        return self.probe


IMPOSTORS = ["wrong_host", "wrong_ca"]


@pytest.mark.rabbitmq
@pytest.mark.parametrize("impostor", IMPOSTORS)
async def test_the_shovel_refuses_an_impostor_and_never_sends_the_link_password(
    rabbit_link: RabbitLink, certs: Certificates, impostor: str
) -> None:
    chosen: Impostor = getattr(certs, impostor)
    link_password = rabbit_link.passwords[rabbit_link.tj.link_user]
    async with mitm("amqp", certificate=chosen.presented, address=certs.address) as listener:
        shovel = _probe(
            rabbit_link, certs.host, listener.port, chosen.trusted_ca, name=f"tls-probe-{impostor}"
        )
        try:
            await asyncio.to_thread(rabbit_link.admin.ensure_shovel, shovel, rabbit_link.passwords)
            await listener.wait_for(attempts=2)  # two tries, or the first one that got through
            status = await asyncio.to_thread(_status, rabbit_link.admin, shovel)
        finally:
            await asyncio.to_thread(rabbit_link.admin.delete_shovel, shovel.vhost, shovel.name)

    assert listener.handshakes == 0, f"the shovel accepted the impostor's certificate ({status})"
    assert link_password.encode() not in listener.heard
    assert status != "running"


@pytest.mark.rabbitmq
async def test_the_shovel_runs_through_tls_with_the_genuine_certificate(
    rabbit_link: RabbitLink, certs: Certificates
) -> None:
    """Control: the same path with the right certificate connects, so the refusals above are TLS's."""
    async with mitm("amqp", certificate=certs.genuine.presented, address=certs.address) as listener:
        shovel = _probe(rabbit_link, certs.host, listener.port, certs.genuine.trusted_ca, name="tls-probe-ok")
        try:
            await asyncio.to_thread(rabbit_link.admin.ensure_shovel, shovel, rabbit_link.passwords)
            running = await asyncio.to_thread(rabbit_link.admin.wait_for_shovel, shovel.vhost, shovel.name)
        finally:
            await asyncio.to_thread(rabbit_link.admin.delete_shovel, shovel.vhost, shovel.name)

    assert running.state == "running"
    assert listener.handshakes >= 1


def _probe(link: RabbitLink, host: str, port: int, ca: Path, *, name: str) -> ProbeShovel:
    """tj's shovel to ru's broker, reached by name through the listener on `port`."""
    peer = CountryBroker(country="ru", url=f"amqps://{host}:{port}/{link.ru.vhost}?cacertfile={ca}")
    return ProbeShovel(source=link.tj, destination=peer, probe=name)


def _status(admin: RabbitAdmin, shovel: ProbeShovel) -> str:
    found = [s for s in admin.shovel_status() if s.vhost == shovel.vhost and s.name == shovel.name]
    return f"{found[0].state} {found[0].reason}" if found else "absent"


@pytest.mark.rabbitmq
@pytest.mark.parametrize("impostor", [*IMPOSTORS, "genuine"])
async def test_the_gateway_client_refuses_an_impostor(
    rabbit_link: RabbitLink, certs: Certificates, impostor: str
) -> None:
    chosen: Impostor = getattr(certs, impostor)
    tj = rabbit_link.tj
    password = rabbit_link.passwords[tj.gateway_user]
    async with mitm("amqp", certificate=chosen.presented, address=certs.address) as listener:
        url = (
            f"amqps://{quote(tj.gateway_user)}:{quote(password, safe='')}@{certs.host}:{listener.port}/"
            f"{tj.vhost}?cafile={chosen.trusted_ca}"
        )
        if impostor == "genuine":
            transport = await RabbitTransport.connect(url=url, name="tls-client-control")
            await transport.close()
        else:
            with pytest.raises(TransportError):
                await RabbitTransport.connect(url=url, name="tls-client-impostor")

    if impostor == "genuine":
        assert listener.handshakes == 1
    else:
        assert listener.handshakes == 0
        assert password.encode() not in listener.heard


# -- PostgreSQL ---------------------------------------------------------------------------------------

PG_SECRET = "pg-S3cret-9"
OPENERS = {
    "gateway store": lambda dsn: PostgresAuditStore.open(dsn, schema="audit_tls_probe"),
    "auditor source": lambda dsn: PostgresSource.open(dsn, schema="audit_tls_probe"),
}


@pytest.fixture
def no_pg_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """asyncpg reads PGSSLMODE and friends: the DSN alone must decide here."""
    for name in list(os.environ):
        if name.startswith("PG"):
            monkeypatch.delenv(name)


@pytest.mark.postgres
@pytest.mark.usefixtures("no_pg_environment")
@pytest.mark.parametrize("opener", OPENERS.values(), ids=OPENERS.keys())
async def test_postgres_with_default_sslmode_is_refused_before_it_connects(
    certs: Certificates, opener: object
) -> None:
    """asyncpg's default (`prefer`) hands the password to anyone with a certificate: refused."""
    async with mitm("postgres", certificate=certs.wrong_host.presented, address=certs.address) as listener:
        dsn = f"postgresql://audit:{PG_SECRET}@{certs.host}:{listener.port}/audit"
        with pytest.raises(ConfigError) as caught:
            await opener(dsn)  # type: ignore[operator]

    assert caught.value.reason is Reason.CONFIG_INSECURE_TLS
    assert PG_SECRET not in str(caught.value)
    assert listener.attempts == 0
    assert PG_SECRET.encode() not in listener.heard


@pytest.mark.postgres
@pytest.mark.usefixtures("no_pg_environment")
@pytest.mark.parametrize("impostor", [*IMPOSTORS, "genuine"])
async def test_postgres_verify_full_refuses_an_impostor(certs: Certificates, impostor: str) -> None:
    chosen: Impostor = getattr(certs, impostor)
    async with mitm("postgres", certificate=chosen.presented, address=certs.address) as listener:
        dsn = (
            f"postgresql://audit:{PG_SECRET}@{certs.host}:{listener.port}/audit"
            f"?sslmode=verify-full&sslrootcert={chosen.trusted_ca}"
        )
        with pytest.raises(AuditError):  # the genuine listener is no database: it fails after TLS
            await PostgresAuditStore.open(dsn, schema="audit_tls_probe")

    if impostor == "genuine":
        assert listener.handshakes == 1
        assert PG_SECRET.encode() in listener.heard  # it did get that far: TLS was the only obstacle
    else:
        assert listener.attempts >= 1
        assert listener.handshakes == 0
        assert PG_SECRET.encode() not in listener.heard
