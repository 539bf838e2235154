"""Who may do what on one country's broker: its users, their permissions, and the whole plan.

Pure, like `topology`, whose names it grants. Each user has one job and the narrowest RabbitMQ
permissions that job needs; none has a tag, so none reaches anything broker-wide (docs/permissions.md):

- `<vhost>-gateway`: the gateway, on its own topology's names only;
- `<vhost>-shovel`: this country's shovel, on its own broker: consume `outbound.<peer>`, nothing else;
- `<peer vhost>-link`: the peer's shovel, on this broker: publish to `inbound`, nothing else;
- `<vhost>-<ministry>` (`tj-mol`): a ministry system: publish to `submit`, nothing else;
- `<vhost>-sub-<subscriber>` (`tj-sub-consulate-moscow`): a subscriber: consume its own queue
  `sub.<AUTHORITY>`, nothing else. The operator's topology declares and binds that queue.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from broker.core.errors import ConfigError, Reason
from broker.exchange.topology import (
    DEFAULT_EXCHANGE,
    INBOUND,
    SUBMIT,
    CountryBroker,
    Declarations,
    Permissions,
    Policy,
    ShovelSpec,
    outbound_queue,
    quarantine_policy,
    subscriber_declarations,
    subscriber_queue,
    vhost_declarations,
)

# Grants nothing: the configure and write rights of a user that only reads.
NOTHING = "^$"


@dataclass(frozen=True)
class BrokerPlan:
    """What one country's broker needs: its vhost, users, permissions, declarations and shovels."""

    broker: CountryBroker
    users: tuple[str, ...]
    permissions: tuple[Permissions, ...]
    declarations: Declarations
    shovels: tuple[ShovelSpec, ...]
    policies: tuple[Policy, ...] = ()
    # Subscribing authority → its RabbitMQ user.
    subscribers: Mapping[str, str] = field(default_factory=dict)
    # The subscribers' own queues and their bindings: declared by `broker topology apply`, so what
    # reaches a subscriber is the operator's choice and waits for it from the start.
    subscriptions: Declarations = field(default_factory=lambda: Declarations((), (), ()))

    @property
    def vhost(self) -> str:
        return self.broker.vhost


def gateway_permissions(broker: CountryBroker) -> Permissions:
    # Only this topology's names, and only in the country's own vhost. Writing to the default
    # exchange is how an answer reaches a submitter's direct reply-to address.
    names = r"inbound|quarantine|outbound|outbound\.[a-z]{2}|delivery|submit|sub\..+"
    return Permissions(
        user=broker.gateway_user,
        vhost=broker.vhost,
        configure=f"^({names})$",
        write=f"^({names}|{re.escape(DEFAULT_EXCHANGE)})$",
        read=f"^({names})$",
    )


def submitter_permissions(broker: CountryBroker, authority_id: str) -> Permissions:
    """A ministry system may publish to `submit` and nothing else.

    Reading its answers needs no permission: direct reply-to is no queue of the vhost. A passive
    declare of `submit` (to see whether a gateway consumes it) needs none either.
    """
    return Permissions(
        user=broker.submitter_user(authority_id),
        vhost=broker.vhost,
        configure=NOTHING,
        write=f"^{SUBMIT}$",
        read=NOTHING,
    )


def link_permissions(*, source: CountryBroker, destination: CountryBroker) -> Permissions:
    """The peer's shovel may publish to our `inbound` exchange and do nothing else."""
    return Permissions(
        user=source.link_user,
        vhost=destination.vhost,
        configure=NOTHING,
        write=f"^{INBOUND}$",
        read=NOTHING,
    )


def shovel_permissions(local: CountryBroker, peers: Sequence[CountryBroker]) -> Permissions:
    """Our shovel may consume `outbound.<peer>` and do nothing else: it finds the queue with a
    passive declare, which needs no right, and acknowledges what the peer confirmed."""
    queues = "|".join(re.escape(outbound_queue(peer.country)) for peer in peers)
    return Permissions(
        user=local.shovel_user, vhost=local.vhost, configure=NOTHING, write=NOTHING, read=f"^({queues})$"
    )


def subscriber_permissions(broker: CountryBroker, authority_id: str) -> Permissions:
    """A subscriber may consume its own queue and do nothing else: not publish, not declare or bind
    (its bindings are the operator's), not read another subscriber's queue."""
    return Permissions(
        user=broker.subscriber_user(authority_id),
        vhost=broker.vhost,
        configure=NOTHING,
        write=NOTHING,
        read=f"^{re.escape(subscriber_queue(authority_id))}$",
    )


def broker_plan(
    local: CountryBroker,
    peers: Sequence[CountryBroker],
    *,
    submitters: Sequence[str] = (),
    subscribers: Mapping[str, Sequence[str]] | None = None,
) -> BrokerPlan:
    """`submitters`: the authorities of `local`'s country that submit through its gateway;
    `subscribers`: those that have messages delivered, each with its queue's binding keys."""
    if any(peer.country == local.country for peer in peers):
        raise ConfigError(Reason.CONFIG_INVALID, f"country {local.country} cannot be its own peer")
    subscribers = subscribers or {}
    incoming_links = tuple(link_permissions(source=peer, destination=local) for peer in peers)
    ministries = tuple(submitter_permissions(local, authority) for authority in submitters)
    readers = tuple(subscriber_permissions(local, authority) for authority in subscribers)
    shovel = (shovel_permissions(local, peers),) if peers else ()
    # The country's own link user lives on the peer's broker, which may be the same node.
    taken = [local.gateway_user, local.link_user, *(p.user for p in (*incoming_links, *shovel))]
    chosen = [permission.user for permission in (*ministries, *readers)]
    clashing = sorted({user for user in chosen if user in taken or chosen.count(user) > 1})
    if clashing:
        raise ConfigError(
            Reason.CONFIG_INVALID,
            f"authorities of {local.country} map to RabbitMQ users that clash: {', '.join(clashing)}",
        )
    queues = [subscriber_declarations(authority, keys) for authority, keys in subscribers.items()]
    granted = (gateway_permissions(local), *incoming_links, *ministries, *shovel, *readers)
    return BrokerPlan(
        broker=local,
        users=tuple(permission.user for permission in granted),
        permissions=granted,
        declarations=vhost_declarations(local.country, [peer.country for peer in peers]),
        subscriptions=Declarations(
            exchanges=tuple(dict.fromkeys(e for q in queues for e in q.exchanges)),
            queues=tuple(queue for q in queues for queue in q.queues),
            bindings=tuple(binding for q in queues for binding in q.bindings),
        ),
        shovels=tuple(ShovelSpec(source=local, destination=peer) for peer in peers),
        policies=(quarantine_policy(local.vhost),),
        subscribers={authority: local.subscriber_user(authority) for authority in subscribers},
    )
