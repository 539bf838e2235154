"""RabbitMQ topology of one bilateral link, computed from a description of the two brokers.

Pure: names, arguments, permissions and shovel definitions only. `rabbit_admin` applies the
broker-wide parts over the management HTTP API and `transport` declares exchanges and queues over AMQP.

Each country is its own broker (in development: its own vhost on one node), so every function
takes a `CountryBroker` carrying that country's AMQP URL. User names follow the vhost name, which
lets a test run with vhosts `t-<random>-tj` share a node with the demo's and an operator's exchange.
Who may do what with these names (users, permissions, the whole plan of one broker) is `plan`'s
business; docs/permissions.md has the table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from broker.core.errors import ConfigError, Reason
from broker.core.tls_policy import shovel_query
from broker.exchange.ministries import submitter_user, subscriber_user

INBOUND = "inbound"
QUARANTINE = "quarantine"
OUTBOUND = "outbound"
DELIVERY = "delivery"
# Ministry systems hand messages to their gateway here (exchange and queue of the same name).
SUBMIT = "submit"
# The default exchange: the gateway answers a submission on its `reply_to` (direct reply-to) through it.
DEFAULT_EXCHANGE = "amq.default"
NO_CITIZENSHIP = "-"
# Bytes of submissions waiting for a gateway before the broker refuses more (the publisher's confirm
# is then negative): a few hundred of the largest, many thousands of ordinary ones.
SUBMIT_MAX_BYTES = 256 * 1024 * 1024

# Poison messages are redelivered this many times before the broker dead-letters them.
DELIVERY_LIMIT = 5
# Seconds a shovel waits before reconnecting to a broker that went away.
SHOVEL_RECONNECT_DELAY = 1
# Bytes of message bodies the quarantine queue holds before it refuses more (reject-publish): the
# gateway then holds the messages it would reject, unacked, until an operator drains quarantine.
# Nothing is dropped: a full quarantine stops rejections loudly rather than losing the oldest. Set by
# a policy, not a queue argument, so that it reaches quarantine queues declared before it existed.
QUARANTINE_MAX_BYTES = 256 * 1024 * 1024
QUARANTINE_POLICY = "exchange-quarantine-limit"
# Only the highest-priority policy matching a queue applies: stay above catch-all operator policies.
QUARANTINE_POLICY_PRIORITY = 100
# How far the broker's limit must exceed the gateway's: a body a little over the gateway's limit (a
# peer configured differently) must still reach the gateway, to be answered `message.oversized`,
# rather than be refused by the broker, which stalls the shovel carrying it. RabbitMQ counts only
# the body; the margin also covers our headers.
MESSAGE_SIZE_HEADROOM = 64 * 1024
# RabbitMQ's words when it refuses a body over its max_message_size (3.8 and later).
_SIZE_REFUSAL = re.compile(r"larger than configured max size (\d+)")

_COUNTRY = re.compile(r"^[a-z]{2}$")
_NODE = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$")
_VHOST = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_AUTHORITY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_BINDING_WORD = re.compile(r"^([A-Za-z0-9_]+|\*|#|-)$")
_ROUTING_WORD = re.compile(r"^([A-Za-z0-9_]+|-)$")

ArgumentValue = str | int | bool
# Queues a gateway consumes: one consumer at a time gets their messages (RabbitMQ's single active
# consumer), so even two gateways that both consumed would never handle messages side by side; the
# writer lock (`broker.exchange.gateway.standby`) keeps a standby from consuming at all.
SINGLE_ACTIVE_CONSUMER: tuple[tuple[str, ArgumentValue], ...] = (("x-single-active-consumer", True),)


class ExchangeKind(StrEnum):
    DIRECT = "direct"
    FANOUT = "fanout"
    TOPIC = "topic"


@dataclass(frozen=True)
class ExchangeDeclaration:
    name: str
    kind: ExchangeKind


@dataclass(frozen=True)
class QueueDeclaration:
    name: str
    # Pairs rather than a dict so declarations stay hashable and compare by value.
    arguments: tuple[tuple[str, ArgumentValue], ...]

    def argument_map(self) -> dict[str, ArgumentValue]:
        return dict(self.arguments)


@dataclass(frozen=True)
class BindingDeclaration:
    exchange: str
    queue: str
    routing_key: str


@dataclass(frozen=True)
class Declarations:
    """Everything declared inside one vhost, in the order it must be declared."""

    exchanges: tuple[ExchangeDeclaration, ...]
    queues: tuple[QueueDeclaration, ...]
    bindings: tuple[BindingDeclaration, ...]


@dataclass(frozen=True)
class Permissions:
    """RabbitMQ's configure/write/read regexes of one user in one vhost."""

    user: str
    vhost: str
    configure: str
    write: str
    read: str


@dataclass(frozen=True)
class Policy:
    """A RabbitMQ policy of one vhost: limits that, unlike queue arguments, reach existing queues."""

    name: str
    vhost: str
    pattern: str
    # Pairs rather than a dict so policies stay hashable and compare by value.
    definition: tuple[tuple[str, ArgumentValue], ...]
    priority: int = 0
    apply_to: str = "queues"

    def definition_map(self) -> dict[str, ArgumentValue]:
        return dict(self.definition)


@dataclass(frozen=True)
class CountryBroker:
    """One country's broker as the other side reaches it: `amqp[s]://host:port/vhost`, no credentials.

    A non-local broker needs `amqps://host:port/vhost?cacertfile=<CA on the broker host>`; the shovel
    URIs then pin peer verification and the host name (`broker.core.tls_policy.shovel_query`). Plaintext
    to a non-local host only with `allow_plaintext` (a private network, `--plaintext-host`).
    """

    country: str
    url: str
    allow_plaintext: bool = False
    # The other nodes of the country's RabbitMQ cluster, `host:port` each (same vhost, scheme and TLS
    # query as `url`): shovels list them all, so a link survives the loss of any one node.
    nodes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _COUNTRY.fullmatch(self.country):
            raise ConfigError(
                Reason.CONFIG_INVALID, f"country code {self.country!r} must be two lowercase letters"
            )
        parts = urlsplit(self.url)
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            raise ConfigError(
                Reason.CONFIG_INVALID, f"broker URL {self.url!r} must be amqp://host:port/vhost"
            )
        if parts.username or parts.password:
            raise ConfigError(Reason.CONFIG_INVALID, "broker URL must not carry credentials")
        if not _VHOST.fullmatch(self.vhost):
            raise ConfigError(
                Reason.CONFIG_INVALID,
                f"vhost {self.vhost!r} in {self.url!r} must be lowercase letters, digits, '-'",
            )
        self._query()  # refuses a URL whose connections would not verify the server
        for node in self.nodes:
            if not _NODE.fullmatch(node):
                raise ConfigError(Reason.CONFIG_INVALID, f"cluster node {node!r} must be host:port")
            self._query(node)

    def _query(self, node: str | None = None) -> str:
        url = self.url if node is None else self._on_node(self.url, node)
        host = urlsplit(url).hostname or ""
        return shovel_query(url, plaintext_hosts=(host,) if self.allow_plaintext else ())

    @staticmethod
    def _on_node(url: str, node: str) -> str:
        parts = urlsplit(url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@{node}" if credentials else node
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    @property
    def vhost(self) -> str:
        return unquote(urlsplit(self.url).path.removeprefix("/"))

    @property
    def gateway_user(self) -> str:
        return f"{self.vhost}-gateway"

    @property
    def link_user(self) -> str:
        """The user this country's shovel logs in as on the peer's broker."""
        return f"{self.vhost}-link"

    @property
    def shovel_user(self) -> str:
        """The user this country's shovel reads its `outbound.<peer>` queues as, on its own broker."""
        return f"{self.vhost}-shovel"

    def subscriber_user(self, authority_id: str) -> str:
        """The RabbitMQ user a subscriber of `authority_id` consumes as: TJ-CONSULATE-MOSCOW →
        `tj-sub-consulate-moscow`."""
        return subscriber_user(self.vhost, self.country, authority_id)

    def submitter_user(self, authority_id: str) -> str:
        """The RabbitMQ user a ministry system of `authority_id` submits as: TJ-MOL → `tj-mol`."""
        return submitter_user(self.vhost, self.country, authority_id)

    def uri_for(self, *, user: str, password: str) -> str:
        parts = urlsplit(self.url)
        netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.netloc}"
        return urlunsplit((parts.scheme, netloc, "/" + quote(self.vhost, safe=""), self._query(), ""))

    def uris_for(self, *, user: str, password: str) -> str | list[str]:
        """`uri_for` on every node: one URI for a single node, a list (a shovel's form) for a cluster."""
        first = self.uri_for(user=user, password=password)
        if not self.nodes:
            return first
        return [first, *(self._on_node(first, node) for node in self.nodes)]


@dataclass(frozen=True)
class ShovelSpec:
    """A dynamic shovel on the source broker pushing `outbound.<dest>` into the peer's `inbound`."""

    source: CountryBroker
    destination: CountryBroker

    @property
    def name(self) -> str:
        return shovel_name(self.source.country, self.destination.country)

    @property
    def vhost(self) -> str:
        return self.source.vhost

    @property
    def users(self) -> tuple[str, str]:
        """Who the shovel logs in as: its own reading user on the source, the link user on the peer."""
        return (self.source.shovel_user, self.source.link_user)

    def definition(self, passwords: Mapping[str, str]) -> dict[str, Any]:
        return {
            "src-protocol": "amqp091",
            # Its own user, which may only consume `outbound.<peer>`: never the gateway's.
            "src-uri": self.source.uris_for(
                user=self.source.shovel_user, password=_password(passwords, self.source.shovel_user)
            ),
            "src-queue": outbound_queue(self.destination.country),
            "dest-protocol": "amqp091",
            "dest-uri": self.destination.uris_for(
                user=self.source.link_user, password=_password(passwords, self.source.link_user)
            ),
            "dest-exchange": INBOUND,
            "dest-exchange-key": self.destination.country,
            # Ack the source only once the destination confirmed: an outage loses nothing.
            "ack-mode": "on-confirm",
            "src-delete-after": "never",
            "dest-add-forward-headers": False,
            "reconnect-delay": SHOVEL_RECONNECT_DELAY,
        }


def shovel_name(source_country: str, destination_country: str) -> str:
    """`tj-to-ru`: the shovel in the source's vhost that carries its outbound queue to the destination."""
    return f"{source_country.lower()}-to-{destination_country.lower()}"


def outbound_queue(peer_country: str) -> str:
    return f"{OUTBOUND}.{peer_country}"


def subscriber_queue(authority_id: str) -> str:
    if not _AUTHORITY.fullmatch(authority_id):
        raise ConfigError(Reason.CONFIG_INVALID, f"authority id {authority_id!r} cannot name a queue")
    return f"sub.{authority_id}"


def delivery_routing_key(message_type: str, citizenship: str | None) -> str:
    """`worker.death.TJ`; `legislation.change.-` when the message concerns no particular worker."""
    key = f"{message_type}.{citizenship or NO_CITIZENSHIP}"
    if not all(_ROUTING_WORD.fullmatch(word) for word in key.split(".")):
        raise ConfigError(Reason.CONFIG_INVALID, f"delivery routing key {key!r} has an invalid word")
    return key


def _quorum_arguments(*, dead_letter: bool) -> tuple[tuple[str, ArgumentValue], ...]:
    arguments: tuple[tuple[str, ArgumentValue], ...] = (("x-queue-type", "quorum"),)
    if dead_letter:
        arguments += (
            ("x-dead-letter-exchange", QUARANTINE),
            # at-least-once dead-lettering keeps a message until quarantine confirmed it, and
            # RabbitMQ only allows that strategy together with reject-publish overflow.
            ("x-dead-letter-strategy", "at-least-once"),
            ("x-overflow", "reject-publish"),
            ("x-delivery-limit", DELIVERY_LIMIT),
        )
    return arguments


def subscriber_declarations(authority_id: str, binding_keys: Sequence[str]) -> Declarations:
    """A consulate's or ministry's own durable queue on the local `delivery` exchange."""
    queue = subscriber_queue(authority_id)
    if not binding_keys:
        raise ConfigError(Reason.CONFIG_INVALID, f"subscriber {authority_id} needs at least one binding key")
    for key in binding_keys:
        if not all(_BINDING_WORD.fullmatch(word) for word in key.split(".")):
            raise ConfigError(Reason.CONFIG_INVALID, f"binding key {key!r} has an invalid word")
    return Declarations(
        exchanges=(ExchangeDeclaration(DELIVERY, ExchangeKind.TOPIC),),
        queues=(QueueDeclaration(queue, _quorum_arguments(dead_letter=True)),),
        bindings=tuple(BindingDeclaration(DELIVERY, queue, key) for key in binding_keys),
    )


def vhost_declarations(local_country: str, peer_countries: Sequence[str]) -> Declarations:
    exchanges = (
        ExchangeDeclaration(INBOUND, ExchangeKind.DIRECT),
        ExchangeDeclaration(QUARANTINE, ExchangeKind.FANOUT),
        ExchangeDeclaration(OUTBOUND, ExchangeKind.DIRECT),
        ExchangeDeclaration(DELIVERY, ExchangeKind.TOPIC),
        ExchangeDeclaration(SUBMIT, ExchangeKind.DIRECT),
    )
    queues = (
        QueueDeclaration(INBOUND, (*_quorum_arguments(dead_letter=True), *SINGLE_ACTIVE_CONSUMER)),
        QueueDeclaration(QUARANTINE, _quorum_arguments(dead_letter=False)),
        # Not dead-lettered: a submission the gateway cannot take is answered (refused), and one no
        # gateway takes expires unsent (the client sets its TTL), so nothing lands in quarantine.
        # Bounded: a ministry system flooding it while no gateway runs is refused, not stored.
        QueueDeclaration(
            SUBMIT,
            (
                *_quorum_arguments(dead_letter=False),
                ("x-max-length-bytes", SUBMIT_MAX_BYTES),
                ("x-overflow", "reject-publish"),
                *SINGLE_ACTIVE_CONSUMER,
            ),
        ),
        *(
            QueueDeclaration(outbound_queue(peer), _quorum_arguments(dead_letter=False))
            for peer in peer_countries
        ),
    )
    bindings = (
        BindingDeclaration(INBOUND, INBOUND, local_country),
        BindingDeclaration(QUARANTINE, QUARANTINE, ""),
        BindingDeclaration(SUBMIT, SUBMIT, local_country),
        *(BindingDeclaration(OUTBOUND, outbound_queue(peer), peer) for peer in peer_countries),
    )
    return Declarations(exchanges=exchanges, queues=queues, bindings=bindings)


def check_message_size_limits(*, broker_limit: int | None, gateway_limit: int) -> str:
    """The operator's line on the node's max_message_size against the gateways' max_message_bytes.

    `broker_limit` None means the node took a body of twice the gateway's limit (its exact limit is
    then unknown: only a refusal names it). Refuses a broker limit the gateways' limit does not fit
    under (with MESSAGE_SIZE_HEADROOM); warns when the broker takes bodies much bigger than any
    gateway opens (deploy/rabbitmq/rabbitmq.conf sets twice the gateway's default).
    """
    wanted = gateway_limit + MESSAGE_SIZE_HEADROOM
    if broker_limit is not None and broker_limit < wanted:
        raise ConfigError(
            Reason.CONFIG_INVALID,
            f"the broker's max_message_size is {broker_limit} bytes, below the gateway's "
            f"max_message_bytes {gateway_limit} + {MESSAGE_SIZE_HEADROOM}: it would refuse messages "
            f"the gateways accept, and a shovel carrying one would stall; set max_message_size to at "
            f"least {wanted} in rabbitmq.conf (deploy/rabbitmq/rabbitmq.conf)",
        )
    if broker_limit is None or broker_limit > 2 * gateway_limit:
        measured = "" if broker_limit is None else f" ({broker_limit} bytes)"
        return (
            f"warning: the broker's max_message_size{measured} is more than twice the gateway's "
            f"max_message_bytes {gateway_limit}: it accepts bodies the gateway only rejects; "
            f"set max_message_size = {2 * gateway_limit} as deploy/rabbitmq/rabbitmq.conf does"
        )
    return f"broker max_message_size {broker_limit} bytes fits gateway max_message_bytes {gateway_limit}"


def size_probes(gateway_limit: int) -> tuple[int, int]:
    """Body sizes that tell the node's limit apart: the smallest it must take, and one it should refuse."""
    return gateway_limit + MESSAGE_SIZE_HEADROOM, 2 * gateway_limit + 1


def limit_from_refusal(diagnostic: str) -> int | None:
    """The node's max_message_size named in its refusal of a body, if the refusal names it."""
    match = _SIZE_REFUSAL.search(diagnostic)
    return int(match.group(1)) if match else None


def quarantine_policy(vhost: str, *, max_bytes: int = QUARANTINE_MAX_BYTES) -> Policy:
    """Quarantine holds at most `max_bytes` of bodies and refuses more rather than drop the oldest."""
    if max_bytes < 1:
        raise ConfigError(Reason.CONFIG_INVALID, f"quarantine byte limit {max_bytes} must be positive")
    return Policy(
        name=QUARANTINE_POLICY,
        vhost=vhost,
        pattern=f"^{QUARANTINE}$",
        definition=(("max-length-bytes", max_bytes), ("overflow", "reject-publish")),
        priority=QUARANTINE_POLICY_PRIORITY,
    )


def _password(passwords: Mapping[str, str], user: str) -> str:
    try:
        return passwords[user]
    except KeyError:
        raise ConfigError(Reason.CONFIG_INVALID, f"no password given for RabbitMQ user {user}") from None
