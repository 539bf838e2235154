"""Each user of a link tries what its job does not need, as its own login, and RabbitMQ refuses it.

The session's link (`rabbit_link`) has every user `broker topology apply` makes. The subscribers'
queues are declared here with the plan's own bindings, as `topology apply` declares them. The gateway,
link and ministry users are tried in test_topology.py; this module tries the shovel's reading user
and the subscribers' users, which consume and do nothing else.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import pytest_asyncio

from broker.core.errors import Reason, TransportError
from broker.exchange.topology import (
    BindingDeclaration,
    Declarations,
    ExchangeDeclaration,
    ExchangeKind,
    QueueDeclaration,
    subscriber_queue,
)
from broker.exchange.transport import RabbitTransport
from broker.state.keystore import KeyStore
from tests.cli.test_error_path import BROKER, one_error_line
from tests.support.rabbit import RabbitLink

pytestmark = pytest.mark.rabbitmq

CONSUL = "TJ-CONSULATE-MOSCOW"
MINISTRY = "TJ-MOL"
MANAGEMENT_URL = "http://127.0.0.1:15672"


async def refused(attempt: Awaitable[object]) -> None:
    with pytest.raises(TransportError) as caught:
        await attempt
    assert caught.value.reason is Reason.TRANSPORT_FORBIDDEN, caught.value


async def eventually_get(transport: RabbitTransport, queue: str, *, seconds: float = 15.0) -> object:
    async with asyncio.timeout(seconds):
        while (message := await transport.get(queue)) is None:  # noqa: ASYNC110 - polling the broker
            await asyncio.sleep(0.05)
    return message


@pytest_asyncio.fixture
async def subscribed(rabbit_link: RabbitLink, tj_gateway: RabbitTransport) -> AsyncIterator[RabbitTransport]:
    """tj's subscribers' queues as the operator's topology declares them, emptied; tj's gateway."""
    [tj_plan] = [plan for plan in rabbit_link.plans if plan.broker == rabbit_link.tj]
    await tj_gateway.declare(tj_plan.subscriptions)
    for authority in tj_plan.subscribers:
        await tj_gateway.purge(subscriber_queue(authority))
    yield tj_gateway


async def login(link: RabbitLink, user: str, *, country: str = "tj") -> RabbitTransport:
    broker = link.tj if country == "tj" else link.ru
    return await RabbitTransport.connect(url=link.url_as(broker, user=user), name=f"test-{user}")


async def test_a_consulate_consumes_its_own_queue_and_nothing_else(
    rabbit_link: RabbitLink, subscribed: RabbitTransport
) -> None:
    gateway = subscribed
    alert_id = str(uuid.uuid4())
    await gateway.publish(
        exchange="delivery", routing_key="worker.death.TJ", body=b"alert", message_id=alert_id
    )
    await gateway.publish(
        exchange="delivery", routing_key="employer.permit.-", body=b"m", message_id="mol-only"
    )
    consul = await login(rabbit_link, rabbit_link.tj.subscriber_user(CONSUL))
    try:
        arrived = await eventually_get(consul, subscriber_queue(CONSUL))
        assert getattr(arrived, "message_id", None) == alert_id
        assert await consul.get(subscriber_queue(CONSUL)) is None  # a ministry's type never reached it

        # Another subscriber's alerts, and the gateway's own queues.
        for queue in (subscriber_queue(MINISTRY), "inbound", "quarantine", "submit", "outbound.ru"):
            await refused(consul.get(queue))
        # Publish: not to the link, not into delivery (forging alerts), not to submissions.
        for exchange in ("", "outbound", "delivery", "inbound", "submit", "quarantine"):
            await refused(
                consul.publish(exchange=exchange, routing_key="ru", body=b"forged", message_id="forged")
            )
        # Declare a queue of its own, or widen its subscription with a binding.
        own_queue = QueueDeclaration("sub.TJ-CONSULATE-MOSCOW-2", (("x-queue-type", "quorum"),))
        await refused(consul.declare(Declarations(exchanges=(), queues=(own_queue,), bindings=())))
        wider = BindingDeclaration("delivery", subscriber_queue(CONSUL), "#")
        await refused(consul.declare(Declarations(exchanges=(), queues=(), bindings=(wider,))))
        delivery = ExchangeDeclaration("delivery", ExchangeKind.TOPIC)
        await refused(consul.declare(Declarations(exchanges=(delivery,), queues=(), bindings=())))
    finally:
        await consul.close()
    # The ministry's copies are still there: the consulate neither read nor removed them.
    ministry_copies = {getattr(await eventually_get(gateway, subscriber_queue(MINISTRY)), "message_id", None)}
    ministry_copies.add(
        getattr(await eventually_get(gateway, subscriber_queue(MINISTRY)), "message_id", None)
    )
    assert ministry_copies == {alert_id, "mol-only"}


async def test_a_consulate_user_has_no_business_in_the_other_country(rabbit_link: RabbitLink) -> None:
    for user in (
        rabbit_link.tj.subscriber_user(CONSUL),
        rabbit_link.ru.subscriber_user("RU-CONSULATE-DUSHANBE"),
    ):
        country = "ru" if user.startswith(rabbit_link.tj.vhost) else "tj"
        await refused(login(rabbit_link, user, country=country))


async def test_the_shovel_user_only_consumes_the_outbound_queue(
    rabbit_link: RabbitLink, tj_gateway: RabbitTransport
) -> None:
    shovel = await login(rabbit_link, rabbit_link.tj.shovel_user)
    try:
        # What it exists for: outbound.ru is its to read (the running shovel competes for it, so
        # only the right is checked here: a refusal would raise).
        await shovel.get("outbound.ru", remove=False)
        for queue in ("inbound", "quarantine", "submit", subscriber_queue(CONSUL)):
            await refused(shovel.get(queue))
        for exchange in ("", "outbound", "delivery", "inbound", "submit"):
            await refused(shovel.publish(exchange=exchange, routing_key="ru", body=b"x", message_id="x"))
        rogue = QueueDeclaration("outbound.xx", (("x-queue-type", "quorum"),))
        await refused(shovel.declare(Declarations(exchanges=(), queues=(rogue,), bindings=())))
    finally:
        await shovel.close()
    # It reads only its own country's broker.
    await refused(login(rabbit_link, rabbit_link.tj.shovel_user, country="ru"))


def subscriber_settings(link: RabbitLink, tmp_path: Path, authority: str) -> Path:
    """A subscriber's own settings, as its kit has them: its user, its password, its key-agreement key."""
    country = authority[:2].lower()
    broker = link.tj if country == "tj" else link.ru
    user = broker.subscriber_user(authority)
    keys = KeyStore(root=tmp_path / "keys")
    now = datetime.now(UTC)
    for cc in ("TJ", "RU"):
        keys.init_country(cc, now=now)
    keys.issue_encryption(authority, now=now)
    secrets = tmp_path / "rabbitmq-password.json"
    secrets.write_text(json.dumps({user: link.passwords[user]}), encoding="utf-8")
    secrets.chmod(0o600)
    settings = tmp_path / "subscriber.toml"
    url = broker.url.replace("amqp://", f"amqp://{user}@")
    settings.write_text(
        f'country = "{country.upper()}"\namqp_url = "{url}"\nkeys_dir = "keys"\nstate_dir = "state"\n'
        'secrets_file = "rabbitmq-password.json"\n',
        encoding="utf-8",
    )
    return settings


def subscribe(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BROKER), "subscribe", *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


async def test_a_subscriber_may_not_choose_its_own_bindings(
    rabbit_link: RabbitLink, subscribed: RabbitTransport, tmp_path: Path
) -> None:
    settings = subscriber_settings(rabbit_link, tmp_path, CONSUL)

    # A type it may receive, but for another country's nationals: the agreement allows the type, the
    # broker refuses the binding.
    arguments = ("--as", CONSUL, "--config", str(settings), "--types", "worker.death", "--citizenship", "RU")
    result = await asyncio.to_thread(subscribe, *arguments, cwd=tmp_path)

    assert result.returncode == 1
    line = one_error_line(result, "transport.forbidden")
    assert f"may not bind {subscriber_queue(CONSUL)}" in line
    assert "leave out --types" in line


async def test_a_subscriber_without_its_queue_is_told_who_declares_it(
    rabbit_link: RabbitLink, tmp_path: Path
) -> None:
    consul = "RU-CONSULATE-DUSHANBE"
    where = quote(rabbit_link.ru.vhost, safe="")
    queue = f"{MANAGEMENT_URL}/api/queues/{where}/{subscriber_queue(consul)}"
    await asyncio.to_thread(httpx.delete, queue, auth=("guest", "guest"), timeout=30)
    settings = subscriber_settings(rabbit_link, tmp_path, consul)

    result = await asyncio.to_thread(subscribe, "--as", consul, "--config", str(settings), cwd=tmp_path)

    assert result.returncode == 1
    line = one_error_line(result, "config.invalid")
    assert f"no queue {subscriber_queue(consul)} to consume" in line
    assert "broker topology apply" in line
