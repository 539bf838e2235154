"""Topology of a link: the pure plan, and what applying it does to a real RabbitMQ.

The RabbitMQ half works in the session's `t-<random>-tj`/`t-<random>-ru` vhosts (see tests/support/rabbit.py).
"""

from __future__ import annotations

import asyncio
import json
import re
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

import httpx
import pytest
from typer.testing import CliRunner

from broker.cli.topology import topology_app
from broker.core.agreement import Agreement
from broker.core.errors import ConfigError, Reason, TransportError
from broker.exchange.fake_transport import _topic_matches
from broker.exchange.ministries import submitting_authorities, subscriptions
from broker.exchange.plan import broker_plan, gateway_permissions
from broker.exchange.provisioning import (
    apply_topology,
    describe,
    load_passwords,
    needed_users,
    parse_brokers,
    plans_for,
)
from broker.exchange.topology import (
    DELIVERY_LIMIT,
    QUARANTINE_MAX_BYTES,
    QUARANTINE_POLICY,
    SUBMIT_MAX_BYTES,
    CountryBroker,
    Declarations,
    ExchangeDeclaration,
    ExchangeKind,
    QueueDeclaration,
    ShovelSpec,
    delivery_routing_key,
    subscriber_declarations,
    vhost_declarations,
)
from broker.exchange.transport import RabbitTransport
from tests.support.rabbit import node_max_message_size

if TYPE_CHECKING:
    from tests.support.rabbit import RabbitLink


# `broker topology` runs in-process here: it must not reconfigure the logging of later tests.
pytestmark = pytest.mark.usefixtures("cli_keeps_test_logging")

MANAGEMENT_URL = "http://127.0.0.1:15672"
TJ = CountryBroker(country="tj", url="amqp://127.0.0.1:5672/tj")
RU = CountryBroker(country="ru", url="amqp://127.0.0.1:5672/ru")

INBOUND_ARGUMENTS = {
    "x-queue-type": "quorum",
    "x-dead-letter-exchange": "quarantine",
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
    "x-delivery-limit": 5,
    # One consumer at a time: a second gateway never handles inbound messages side by side.
    "x-single-active-consumer": True,
}

# Bounded, and refusing rather than dropping when full (docs/decisions.md, "Quarantine is bounded").
QUARANTINE_POLICY_DEFINITION = {"max-length-bytes": QUARANTINE_MAX_BYTES, "overflow": "reject-publish"}


# -- the plan (pure) --------------------------------------------------------------------------------


class TestPlan:
    def test_a_cluster_s_shovel_lists_every_node_of_both_sides(self) -> None:
        tj = CountryBroker(country="tj", url="amqp://127.0.0.1:5672/tj", nodes=("127.0.0.1:5673",))
        ru = CountryBroker(
            country="ru", url="amqp://127.0.0.1:5682/ru", nodes=("127.0.0.1:5683", "127.0.0.1:5684")
        )
        definition = ShovelSpec(source=tj, destination=ru).definition(
            {tj.shovel_user: "s", tj.link_user: "l"}
        )
        assert [urlsplit(uri).port for uri in definition["src-uri"]] == [5672, 5673]
        assert [urlsplit(uri).port for uri in definition["dest-uri"]] == [5682, 5683, 5684]
        assert {urlsplit(uri).path for uri in definition["dest-uri"]} == {"/ru"}
        assert {urlsplit(uri).username for uri in definition["dest-uri"]} == {tj.link_user}
        assert {urlsplit(uri).username for uri in definition["src-uri"]} == {tj.shovel_user}
        # A single node keeps the plain string form.
        single = ShovelSpec(source=TJ, destination=RU).definition({TJ.shovel_user: "s", TJ.link_user: "l"})
        assert isinstance(single["dest-uri"], str)

    @pytest.mark.parametrize("node", ["rabbit-2", "rabbit-2:port", "amqp://rabbit-2:5672", "a b:5672"])
    def test_a_cluster_node_that_is_not_host_port_is_refused(self, node: str) -> None:
        with pytest.raises(ConfigError) as caught:
            CountryBroker(country="tj", url="amqp://127.0.0.1:5672/tj", nodes=(node,))
        assert caught.value.reason is Reason.CONFIG_INVALID

    def test_vhost_has_the_five_exchanges_and_quorum_queues(self) -> None:
        declarations = vhost_declarations("tj", ["ru"])

        assert {e.name: e.kind for e in declarations.exchanges} == {
            "inbound": ExchangeKind.DIRECT,
            "quarantine": ExchangeKind.FANOUT,
            "outbound": ExchangeKind.DIRECT,
            "delivery": ExchangeKind.TOPIC,
            "submit": ExchangeKind.DIRECT,
        }
        queues = {q.name: q.argument_map() for q in declarations.queues}
        assert queues == {
            "inbound": INBOUND_ARGUMENTS,
            "quarantine": {"x-queue-type": "quorum"},
            "outbound.ru": {"x-queue-type": "quorum"},
            "submit": {
                "x-queue-type": "quorum",
                "x-max-length-bytes": SUBMIT_MAX_BYTES,
                "x-overflow": "reject-publish",
                "x-single-active-consumer": True,
            },
        }
        assert {(b.exchange, b.queue, b.routing_key) for b in declarations.bindings} == {
            ("inbound", "inbound", "tj"),
            ("quarantine", "quarantine", ""),
            ("outbound", "outbound.ru", "ru"),
            ("submit", "submit", "tj"),
        }

    def test_plan_of_one_broker(self) -> None:
        plan = broker_plan(TJ, [RU], submitters=["TJ-MOL", "TJ-MVD"])

        assert plan.vhost == "tj"
        assert plan.users == ("tj-gateway", "ru-link", "tj-mol", "tj-mvd", "tj-shovel")
        link = plan.permissions[1]
        assert (link.user, link.vhost, link.configure, link.write, link.read) == (
            "ru-link",
            "tj",
            "^$",
            "^inbound$",
            "^$",
        )
        assert [shovel.name for shovel in plan.shovels] == ["tj-to-ru"]

    def test_each_ministry_may_only_publish_submissions(self) -> None:
        plan = broker_plan(TJ, [RU], submitters=["TJ-MOL", "TJ-MVD"])

        ministries = {p.user: (p.vhost, p.configure, p.write, p.read) for p in plan.permissions[2:4]}
        assert ministries == {
            "tj-mol": ("tj", "^$", "^submit$", "^$"),
            "tj-mvd": ("tj", "^$", "^submit$", "^$"),
        }

    def test_the_shovel_may_only_consume_the_outbound_queues(self) -> None:
        plan = broker_plan(TJ, [RU])
        [shovel] = [p for p in plan.permissions if p.user == "tj-shovel"]

        assert (shovel.vhost, shovel.configure, shovel.write) == ("tj", "^$", "^$")
        assert re.match(shovel.read, "outbound.ru")
        for name in ("outbound", "inbound", "submit", "sub.TJ-MOL", "outbound.rux", "quarantine"):
            assert not re.match(shovel.read, name), name

    def test_each_subscriber_may_only_consume_its_own_queue(self) -> None:
        plan = broker_plan(
            TJ, [RU], subscribers={"TJ-CONSULATE-MOSCOW": ["worker.death.TJ"], "TJ-MOL": ["#"]}
        )
        readers = {p.user: p for p in plan.permissions if "-sub-" in p.user}

        assert plan.subscribers == {"TJ-CONSULATE-MOSCOW": "tj-sub-consulate-moscow", "TJ-MOL": "tj-sub-mol"}
        consul = readers["tj-sub-consulate-moscow"]
        assert (consul.vhost, consul.configure, consul.write) == ("tj", "^$", "^$")
        assert re.match(consul.read, "sub.TJ-CONSULATE-MOSCOW")
        for name in ("sub.TJ-MOL", "sub.TJ-CONSULATE-MOSCOWX", "inbound", "delivery", "submit"):
            assert not re.match(consul.read, name), name
        # The queues are the operator's: declared and bound by the plan, not by the subscriber.
        assert {q.name for q in plan.subscriptions.queues} == {"sub.TJ-CONSULATE-MOSCOW", "sub.TJ-MOL"}
        assert ("delivery", "sub.TJ-CONSULATE-MOSCOW", "worker.death.TJ") in {
            (b.exchange, b.queue, b.routing_key) for b in plan.subscriptions.bindings
        }

    def test_no_user_of_a_plan_reaches_anything_broker_wide(self) -> None:
        [plan] = plans_for([TJ, RU], ["tj"])
        assert describe(plan)["users"] == list(plan.users)  # names only: no user has a tag
        assert all(p.vhost == "tj" for p in plan.permissions)

    def test_what_reaches_a_subscriber_follows_the_agreement(self, agreement: Agreement) -> None:
        found = subscriptions(agreement, "TJ")

        assert set(found) == {"TJ-MOL", "TJ-MVD", "TJ-CONSULATE-MOSCOW"}  # no gateway, CA or auditor
        consul = set(found["TJ-CONSULATE-MOSCOW"])
        assert {"worker.death.TJ", "work_permit.cancellation.TJ", "legislation.change.-"} <= consul
        assert not {key for key in consul if key.endswith((".RU", ".*"))}
        assert not {key for key in consul if key.startswith("employer.permit")}  # not a consulate's
        assert "worker.death.*" in found["TJ-MOL"]

    def test_the_ministries_of_the_agreement_submit_and_the_protocol_roles_do_not(
        self, agreement: Agreement
    ) -> None:
        assert submitting_authorities(agreement, "TJ") == ("TJ-MOL", "TJ-MVD")
        assert submitting_authorities(agreement, "RU") == ("RU-MVD", "RU-MINTRUD")
        [plan] = plans_for([TJ, RU], ["ru"])
        assert plan.users == (
            "ru-gateway",
            "tj-link",
            "ru-mvd",
            "ru-mintrud",
            "ru-shovel",
            "ru-sub-mvd",
            "ru-sub-mintrud",
            "ru-sub-consulate-dushanbe",
        )

    def test_a_ministry_user_that_would_clash_with_the_link_users_is_refused(self) -> None:
        for clashing in ("TJ-GATEWAY", "TJ-LINK", "TJ-SHOVEL"):
            with pytest.raises(ConfigError) as caught:
                broker_plan(TJ, [RU], submitters=[clashing])
            assert "clash" in caught.value.diagnostic
        with pytest.raises(ConfigError):
            broker_plan(TJ, [RU], submitters=["TJ-MOL", "TJ-MOL"])
        assert "tj-mol" in broker_plan(TJ, [RU], submitters=["TJ-MOL"]).users
        with pytest.raises(ConfigError) as caught:  # a subscriber's user may not be a ministry's either
            broker_plan(TJ, [RU], submitters=["TJ-SUB-MOL"], subscribers={"TJ-MOL": ["#"]})
        assert "tj-sub-mol" in caught.value.diagnostic

    def test_quarantine_is_bounded_by_a_policy_of_its_own_vhost(self) -> None:
        [policy] = broker_plan(TJ, [RU]).policies

        assert (policy.name, policy.vhost, policy.pattern, policy.apply_to) == (
            QUARANTINE_POLICY,
            "tj",
            "^quarantine$",
            "queues",
        )
        assert policy.definition_map() == QUARANTINE_POLICY_DEFINITION
        assert describe(broker_plan(TJ, [RU]))["policies"][QUARANTINE_POLICY]["priority"] == policy.priority

    def test_shovel_definition(self) -> None:
        [shovel] = broker_plan(TJ, [RU]).shovels
        definition = shovel.definition({"tj-shovel": "g", "tj-link": "p@ss/w:rd"})

        # The shovel reads as its own user, never the gateway's.
        assert definition["src-uri"] == "amqp://tj-shovel:g@127.0.0.1:5672/tj"
        assert definition["src-queue"] == "outbound.ru"
        dest = urlsplit(definition["dest-uri"])
        assert (dest.username, unquote(dest.password or ""), dest.path) == ("tj-link", "p@ss/w:rd", "/ru")
        assert (definition["dest-exchange"], definition["dest-exchange-key"]) == ("inbound", "ru")
        assert definition["ack-mode"] == "on-confirm"
        assert definition["src-delete-after"] == "never"
        assert definition["dest-add-forward-headers"] is False
        assert 0 < definition["reconnect-delay"] <= 5

    def test_shovel_without_password_is_a_config_error(self) -> None:
        [shovel] = broker_plan(TJ, [RU]).shovels
        with pytest.raises(ConfigError) as caught:
            shovel.definition({"tj-shovel": "g"})
        assert caught.value.reason is Reason.CONFIG_INVALID

    @pytest.mark.parametrize(
        "name", ["inbound", "quarantine", "outbound", "outbound.ru", "delivery", "submit", "sub.TJ-MOL"]
    )
    def test_gateway_may_use_its_topology(self, name: str) -> None:
        permissions = gateway_permissions(TJ)
        assert all(
            re.match(regex, name) for regex in (permissions.configure, permissions.write, permissions.read)
        )

    @pytest.mark.parametrize("name", ["evil", "amq.default", "outbound.ru.x", "inbound2", "sub.", "submit2"])
    def test_gateway_may_not_use_other_names(self, name: str) -> None:
        assert not re.match(gateway_permissions(TJ).configure, name)

    def test_gateway_may_answer_submitters_through_the_default_exchange_only(self) -> None:
        # Direct reply-to answers go through amq.default; it may be written to, never configured or read.
        permissions = gateway_permissions(TJ)
        assert re.match(permissions.write, "amq.default")
        assert not re.match(permissions.read, "amq.default")
        assert not re.match(permissions.write, "amq.topic")

    @pytest.mark.parametrize(
        "url",
        [
            "amqp://guest:guest@127.0.0.1:5672/tj",  # credentials belong in the secrets file
            "http://127.0.0.1/tj",
            "amqp://127.0.0.1:5672/",  # the default vhost cannot name users
            "amqp://127.0.0.1:5672/TJ",
        ],
    )
    def test_bad_broker_urls_are_refused(self, url: str) -> None:
        with pytest.raises(ConfigError):
            CountryBroker(country="tj", url=url)

    def test_users_follow_the_vhost(self) -> None:
        broker = CountryBroker(country="tj", url="amqp://127.0.0.1:5672/t-abc-tj")
        assert (broker.vhost, broker.gateway_user, broker.link_user) == (
            "t-abc-tj",
            "t-abc-tj-gateway",
            "t-abc-tj-link",
        )
        assert broker.uri_for(user="u", password="a b") == "amqp://u:a%20b@127.0.0.1:5672/t-abc-tj"

    def test_country_cannot_be_its_own_peer(self) -> None:
        with pytest.raises(ConfigError):
            broker_plan(TJ, [CountryBroker(country="tj", url="amqp://127.0.0.1/tj2")])

    def test_delivery_routing_keys(self) -> None:
        assert delivery_routing_key("worker.death", "TJ") == "worker.death.TJ"
        assert delivery_routing_key("legislation.change", None) == "legislation.change.-"
        with pytest.raises(ConfigError):
            delivery_routing_key("worker.death", "T#")

    def test_subscriber_declarations(self) -> None:
        declarations = subscriber_declarations(
            "TJ-CONSULATE-MOSCOW", ["worker.death.TJ", "work_permit.cancellation.*"]
        )

        assert [q.name for q in declarations.queues] == ["sub.TJ-CONSULATE-MOSCOW"]
        assert declarations.queues[0].argument_map()["x-queue-type"] == "quorum"
        assert [(b.exchange, b.routing_key) for b in declarations.bindings] == [
            ("delivery", "worker.death.TJ"),
            ("delivery", "work_permit.cancellation.*"),
        ]

    @pytest.mark.parametrize(
        ("authority", "keys"),
        [("TJ CONSULATE", ["worker.death.*"]), ("TJ-MOL", []), ("TJ-MOL", ["worker..TJ"])],
    )
    def test_bad_subscriptions_are_refused(self, authority: str, keys: list[str]) -> None:
        with pytest.raises(ConfigError):
            subscriber_declarations(authority, keys)

    @pytest.mark.parametrize(
        ("pattern", "key", "matches"),
        [
            ("worker.death.*", "worker.death.TJ", True),
            ("worker.death.*", "worker.death", False),
            ("worker.#", "worker.death.TJ", True),
            ("#", "legislation.change.-", True),
            ("#.TJ", "worker.death.TJ", True),
            ("worker.death.TJ", "worker.death.RU", False),
        ],
    )
    def test_fake_topic_matching_follows_amqp(self, pattern: str, key: str, matches: bool) -> None:
        assert _topic_matches(pattern.split("."), key.split(".")) is matches

    def test_pure_modules_do_not_import_the_broker_library(self) -> None:
        code = (
            "import sys, broker.exchange.topology, broker.exchange.transport_api, broker.exchange.fake_transport,"
            " broker.exchange.ministries, broker.exchange.submission;"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('aio_pika', 'aiormq', 'pamqp')))"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert result.stdout.strip() == "[]"


class TestCli:
    def test_parse_brokers_and_pick_local_plans(self) -> None:
        brokers = parse_brokers(
            ["TJ=amqp://10.0.0.1:5672/tj", "ru=amqp://10.0.0.2:5672/ru"],
            plaintext_hosts=["10.0.0.1", "10.0.0.2"],
        )
        [plan] = plans_for(brokers, ["ru"])

        assert plan.broker.url == "amqp://10.0.0.2:5672/ru"
        assert (
            plan.shovels[0]
            .definition(dict.fromkeys(needed_users([plan]), "x"))["dest-uri"]
            .startswith("amqp://ru-link:x@10.0.0.1:5672/tj")
        )
        assert needed_users([plan]) == [
            "ru-gateway",
            "ru-link",
            "ru-mintrud",
            "ru-mvd",
            "ru-shovel",
            "ru-sub-consulate-dushanbe",
            "ru-sub-mintrud",
            "ru-sub-mvd",
            "tj-link",
        ]

    @pytest.mark.parametrize(
        "values",
        [
            ["tj=amqp://127.0.0.1/tj"],
            ["tj=amqp://127.0.0.1/tj", "tj=amqp://127.0.0.1/tj2"],
            ["tj amqp://127.0.0.1/tj"],
        ],
    )
    def test_a_link_needs_two_countries(self, values: list[str]) -> None:
        with pytest.raises(ConfigError):
            parse_brokers(values)

    def test_broker_nodes_make_every_shovel_list_the_cluster(self) -> None:
        brokers = parse_brokers(
            ["tj=amqps://rabbit-1.tj.example:5671/tj?cacertfile=/ca.pem", "ru=amqp://127.0.0.1:5672/ru"],
            nodes=["tj=rabbit-2.tj.example:5671", "tj=rabbit-3.tj.example:5671", "ru=127.0.0.1:5673"],
        )
        [tj_plan] = plans_for(brokers, ["tj"])
        definition = tj_plan.shovels[0].definition(dict.fromkeys(needed_users([tj_plan]), "x"))
        assert [urlsplit(uri).hostname for uri in definition["src-uri"]] == [
            "rabbit-1.tj.example",
            "rabbit-2.tj.example",
            "rabbit-3.tj.example",
        ]
        assert [urlsplit(uri).port for uri in definition["dest-uri"]] == [5672, 5673]

    @pytest.mark.parametrize(
        ("nodes", "reason"),
        [
            (["tj=rabbit-2.example:5672"], Reason.CONFIG_INSECURE_TLS),  # plaintext to another host
            (["uz=127.0.0.1:5673"], Reason.CONFIG_INVALID),  # no such broker
            (["tj 127.0.0.1:5673"], Reason.CONFIG_INVALID),
            (["tj=127.0.0.1"], Reason.CONFIG_INVALID),  # no port
        ],
    )
    def test_a_broker_node_that_cannot_be_used_is_refused(self, nodes: list[str], reason: Reason) -> None:
        with pytest.raises(ConfigError) as caught:
            parse_brokers(["tj=amqp://127.0.0.1:5672/tj", "ru=amqp://127.0.0.1:5672/ru"], nodes=nodes)
        assert caught.value.reason is reason

    def test_passwords_are_generated_once_and_kept_private(self, tmp_path: Path) -> None:
        path = tmp_path / "var" / "secrets.json"
        first = load_passwords(path, ["a", "b"])
        again = load_passwords(path, ["a", "b", "c"])

        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert len(set(first.values())) == 2
        assert {k: again[k] for k in first} == first
        assert again["c"]
        assert json.loads(path.read_text()) == again

    def test_show_masks_passwords(self) -> None:
        result = CliRunner().invoke(topology_app, ["show", "--json"])

        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert [entry["vhost"] for entry in report] == ["tj", "ru"]
        assert (
            report[0]["shovels"]["tj-to-ru"]["src-uri"]
            == "amqp://tj-shovel:%2A%2A%2A%2A%2A%2A%2A%2A@127.0.0.1:5672/tj"
        )
        assert report[0]["queues"]["inbound"] == INBOUND_ARGUMENTS
        assert describe(broker_plan(RU, [TJ]))["permissions"][1]["user"] == "tj-link"

    def test_show_names_each_subscriber_queue_and_the_user_that_consumes_it(self) -> None:
        result = CliRunner().invoke(topology_app, ["show"])
        report = json.loads(CliRunner().invoke(topology_app, ["show", "--json"]).output)

        assert result.exit_code == 0, result.output
        assert "sub.TJ-CONSULATE-MOSCOW (consumed as tj-sub-consulate-moscow)" in result.output
        assert report[0]["subscribers"]["TJ-CONSULATE-MOSCOW"] == "tj-sub-consulate-moscow"
        assert "worker.death.TJ" in report[0]["subscriptions"]["sub.TJ-CONSULATE-MOSCOW"]

    def test_bad_broker_option_exits_with_an_error(self) -> None:
        result = CliRunner().invoke(topology_app, ["show", "--broker", "tj=amqp://127.0.0.1/tj"])
        assert result.exit_code == 1
        assert "config.invalid" in result.output


# -- applied to a real RabbitMQ ---------------------------------------------------------------------


def in_thread(function: Any, *args: Any) -> Any:
    """Run blocking code (asyncio.run, the CLI) outside the test's event loop."""
    with ThreadPoolExecutor(max_workers=1) as worker:
        return worker.submit(function, *args).result()


def api_json(*segments: str) -> Any:
    """What the node's management API lists at /api/<segments>, read as its guest administrator."""
    path = "/api/" + "/".join(quote(segment, safe="") for segment in segments)
    response = httpx.get(f"{MANAGEMENT_URL}{path}", auth=("guest", "guest"), timeout=30)
    response.raise_for_status()
    return response.json()


def api_json_when(ready: Callable[[Any], bool], *segments: str, timeout_s: float = 30.0) -> Any:
    """`api_json`, polled until `ready` says the listing carries what the test reads."""
    deadline = time.monotonic() + timeout_s
    while not ready(listing := api_json(*segments)):
        assert time.monotonic() < deadline, f"the management API never listed it: {listing!r}"
        time.sleep(0.2)
    return listing


async def eventually_get(transport: RabbitTransport, queue: str, *, seconds: float = 15.0) -> Any:
    async with asyncio.timeout(seconds):
        while (message := await transport.get(queue)) is None:  # noqa: ASYNC110 - polling the broker
            await asyncio.sleep(0.05)
    return message


@pytest.mark.rabbitmq
class TestAppliedTopology:
    def test_applying_again_changes_nothing(self, rabbit_link: RabbitLink) -> None:
        changes = in_thread(
            asyncio.run,
            apply_topology(plans=rabbit_link.plans, passwords=rabbit_link.passwords, admin=rabbit_link.admin),
        )
        assert changes == []

    def test_cli_apply_is_idempotent_too(self, rabbit_link: RabbitLink, tmp_path: Path) -> None:
        secrets_file = tmp_path / "secrets.json"
        secrets_file.write_text(json.dumps(rabbit_link.passwords))
        arguments = ["apply", "--secrets", str(secrets_file)]
        arguments += ["--broker", f"tj={rabbit_link.tj.url}", "--broker", f"ru={rabbit_link.ru.url}"]

        result = in_thread(CliRunner().invoke, topology_app, arguments)

        assert result.exit_code == 0, result.output
        assert "(0 changes)" in result.output
        assert "the broker's max_message_size is" in result.output  # the shared node: RabbitMQ's default

    def test_cli_apply_with_a_mistyped_secrets_path_changes_no_live_password(
        self, rabbit_link: RabbitLink, tmp_path: Path
    ) -> None:
        mistyped = tmp_path / "secrest.json"
        arguments = ["apply", "--secrets", str(mistyped)]
        arguments += ["--broker", f"tj={rabbit_link.tj.url}", "--broker", f"ru={rabbit_link.ru.url}"]

        result = in_thread(CliRunner().invoke, topology_app, arguments)

        assert result.exit_code == 1
        assert f"error [config.invalid] {mistyped} holds no password for" in result.output
        assert not mistyped.exists()  # nothing generated, nothing set on the broker
        again = in_thread(
            asyncio.run,
            apply_topology(plans=rabbit_link.plans, passwords=rabbit_link.passwords, admin=rabbit_link.admin),
        )
        assert again == []  # every user still has the password the link's gateways use

    def test_cli_apply_refuses_a_node_that_would_refuse_what_gateways_accept(
        self, rabbit_link: RabbitLink, tmp_path: Path
    ) -> None:
        secrets_file = tmp_path / "secrets.json"
        secrets_file.write_text(json.dumps(rabbit_link.passwords))
        gateway_limit = node_max_message_size()  # the node's limit leaves no headroom
        arguments = ["apply", "--secrets", str(secrets_file), "--max-message-bytes", str(gateway_limit)]
        arguments += ["--broker", f"tj={rabbit_link.tj.url}", "--broker", f"ru={rabbit_link.ru.url}"]

        result = in_thread(CliRunner().invoke, topology_app, arguments)

        assert result.exit_code == 1
        assert (
            f"error [config.invalid] the broker's max_message_size is {gateway_limit} bytes" in result.output
        )
        assert "shovel" not in result.output.split("error [config.invalid]")[0]  # refused before any shovel

    def test_queues_are_durable_quorum_queues_with_the_planned_arguments(
        self, rabbit_link: RabbitLink
    ) -> None:
        queues = {q["name"]: q for q in api_json("queues", rabbit_link.tj.vhost)}

        assert {"inbound", "quarantine", "outbound.ru"} <= set(queues)
        assert all(q["type"] == "quorum" and q["durable"] for q in queues.values())
        assert queues["inbound"]["arguments"] == INBOUND_ARGUMENTS

    def test_quarantine_is_bounded_by_the_planned_policy(self, rabbit_link: RabbitLink) -> None:
        for broker in (rabbit_link.tj, rabbit_link.ru):
            [policy] = api_json("policies", broker.vhost)
            # A queue's policy comes with its statistics, which the API refreshes every few seconds.
            applied = api_json_when(
                lambda queues: all("policy" in queue for queue in queues), "queues", broker.vhost
            )

            assert (policy["name"], policy["pattern"], policy["apply-to"]) == (
                QUARANTINE_POLICY,
                "^quarantine$",
                "queues",
            )
            assert policy["definition"] == QUARANTINE_POLICY_DEFINITION
            assert {queue["name"]: queue["policy"] for queue in applied}["quarantine"] == QUARANTINE_POLICY

    def test_both_shovels_run(self, rabbit_link: RabbitLink) -> None:
        states = {(s.vhost, s.name): s.state for s in rabbit_link.admin.shovel_status()}
        assert states[(rabbit_link.tj.vhost, "tj-to-ru")] == "running"
        assert states[(rabbit_link.ru.vhost, "ru-to-tj")] == "running"

    async def test_shovel_carries_a_message_to_the_peer_intact(
        self, tj_gateway: RabbitTransport, ru_gateway: RabbitTransport
    ) -> None:
        message_id = str(uuid.uuid4())
        headers: dict[str, str | int] = {"x-type": "worker.death", "x-audit-index": 7}

        await tj_gateway.publish(
            exchange="outbound", routing_key="ru", body=b"sealed", message_id=message_id, headers=headers
        )
        arrived = await eventually_get(ru_gateway, "inbound")

        assert (arrived.message_id, arrived.body, dict(arrived.headers)) == (message_id, b"sealed", headers)
        assert await tj_gateway.queue_counts("outbound.ru") == (
            0,
            1,
        )  # taken by the shovel, which consumes it

    async def test_receipts_travel_back_the_same_way(
        self, tj_gateway: RabbitTransport, ru_gateway: RabbitTransport
    ) -> None:
        message_id = str(uuid.uuid4())
        await ru_gateway.publish(
            exchange="outbound", routing_key="tj", body=b"receipt", message_id=message_id
        )
        arrived = await eventually_get(tj_gateway, "inbound")
        assert arrived.message_id == message_id

    async def test_gateway_is_refused_by_the_peer_vhost(self, rabbit_link: RabbitLink) -> None:
        tj_user = rabbit_link.tj.gateway_user
        with pytest.raises(TransportError) as caught:
            await RabbitTransport.connect(
                url=rabbit_link.url_as(rabbit_link.ru, user=tj_user), name="test-intruder"
            )
        assert caught.value.reason is Reason.TRANSPORT_FORBIDDEN

        granted = api_json("users", tj_user, "permissions")
        assert [entry["vhost"] for entry in granted] == [rabbit_link.tj.vhost]

    async def test_wrong_password_is_refused(self, rabbit_link: RabbitLink) -> None:
        url = rabbit_link.tj.uri_for(user=rabbit_link.tj.gateway_user, password="wrong")
        with pytest.raises(TransportError) as caught:
            await RabbitTransport.connect(url=url, name="test-wrong-password")
        assert caught.value.reason is Reason.TRANSPORT_FORBIDDEN

    async def test_broker_down_is_unavailable(self) -> None:
        with pytest.raises(TransportError) as caught:
            await RabbitTransport.connect(url="amqp://guest:guest@127.0.0.1:1/", name="test-nowhere")
        assert caught.value.reason is Reason.TRANSPORT_UNAVAILABLE

    async def test_gateway_cannot_declare_names_outside_the_topology(
        self, tj_gateway: RabbitTransport
    ) -> None:
        rogue = Declarations(
            exchanges=(), queues=(QueueDeclaration("evil", (("x-queue-type", "quorum"),)),), bindings=()
        )
        with pytest.raises(TransportError) as caught:
            await tj_gateway.declare(rogue)
        assert caught.value.reason is Reason.TRANSPORT_FORBIDDEN

    async def test_link_user_can_only_write_to_inbound(
        self, rabbit_link: RabbitLink, ru_gateway: RabbitTransport
    ) -> None:
        link_user = rabbit_link.tj.link_user
        intruder = await RabbitTransport.connect(
            url=rabbit_link.url_as(rabbit_link.ru, user=link_user), name="test-tj-link"
        )
        try:
            await intruder.publish(exchange="inbound", routing_key="ru", body=b"ok", message_id="via-link")
            for exchange in ("outbound", "delivery", "quarantine"):
                with pytest.raises(TransportError) as refused:
                    await intruder.publish(exchange=exchange, routing_key="tj", body=b"no", message_id="nope")
                assert refused.value.reason is Reason.TRANSPORT_FORBIDDEN, exchange
            forbidden_reads = (intruder.get("inbound"), intruder.purge("inbound"))
            for attempt in forbidden_reads:
                with pytest.raises(TransportError) as refused:
                    await attempt
                assert refused.value.reason is Reason.TRANSPORT_FORBIDDEN
            with pytest.raises(TransportError) as refused:
                await intruder.declare(
                    Declarations(
                        exchanges=(ExchangeDeclaration("inbound", ExchangeKind.DIRECT),),
                        queues=(),
                        bindings=(),
                    )
                )
            assert refused.value.reason is Reason.TRANSPORT_FORBIDDEN
        finally:
            await intruder.close()

        arrived = await ru_gateway.get("inbound")
        assert arrived is not None
        assert arrived.message_id == "via-link"
        # The link user has no business in its own country's vhost either.
        with pytest.raises(TransportError):
            await RabbitTransport.connect(
                url=rabbit_link.url_as(rabbit_link.tj, user=link_user), name="test-link-home"
            )

    async def test_a_ministry_user_can_only_submit(
        self, rabbit_link: RabbitLink, tj_gateway: RabbitTransport
    ) -> None:
        ministry = await RabbitTransport.connect(
            url=rabbit_link.url_as(rabbit_link.tj, user=rabbit_link.tj.submitter_user("TJ-MOL")),
            name="test-tj-mol",
        )
        try:
            await ministry.publish(exchange="submit", routing_key="tj", body=b"{}", message_id="submitted")
            # The default exchange would reach every queue of the vhost by name.
            for exchange in ("", "inbound", "outbound", "delivery", "quarantine"):
                with pytest.raises(TransportError) as refused:
                    await ministry.publish(
                        exchange=exchange, routing_key="inbound", body=b"no", message_id="no"
                    )
                assert refused.value.reason is Reason.TRANSPORT_FORBIDDEN, exchange
            for attempt in (ministry.get("submit"), ministry.purge("submit"), ministry.get("inbound")):
                with pytest.raises(TransportError) as refused:
                    await attempt
                assert refused.value.reason is Reason.TRANSPORT_FORBIDDEN
            # Whether a gateway consumes submissions it may see (a passive declare needs no right).
            assert await ministry.queue_counts("submit") == (1, 0)
        finally:
            await ministry.close()
        taken = await tj_gateway.get("submit")
        assert taken is not None
        assert taken.message_id == "submitted"

    async def test_poison_sent_across_the_link_ends_in_the_peer_quarantine(
        self, tj_gateway: RabbitTransport, ru_gateway: RabbitTransport
    ) -> None:
        message_id = str(uuid.uuid4())
        deliveries: list[int] = []

        async def crashing(message: Any) -> Any:
            deliveries.append(message.delivery_count)
            raise RuntimeError("cannot parse")

        consumer = await ru_gateway.consume("inbound", crashing)
        try:
            await tj_gateway.publish(
                exchange="outbound", routing_key="ru", body=b"\xff", message_id=message_id
            )
            quarantined = await eventually_get(ru_gateway, "quarantine")
        finally:
            await consumer.cancel()
        assert (quarantined.message_id, quarantined.death_reason) == (message_id, "delivery_limit")
        assert len(deliveries) == DELIVERY_LIMIT + 1
