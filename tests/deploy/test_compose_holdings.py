"""Who holds what in docker-compose.yml. README's "First start" is run as written (each `docker
compose run` of the operator's tool in a folder standing for its container, its volumes linked in):
the real `broker init`, bundles exported and imported, the consulate's kit assembled. Then no
container sees a private key but its own principal's, and none is given a password but its own
users'."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from broker.core.agreement import Agreement, load_agreement
from broker.exchange import provisioning
from broker.exchange.ministries import submitter_user, submitting_authorities
from broker.state.keystore import KeyStore
from broker.state.rabbitmq_passwords import PASSWORD_ENV_PREFIX, password_variable
from tests.deploy.compose_file import (
    ROOT,
    Mount,
    command,
    compose_document,
    hidden,
    host_path,
    mount_of,
    mounts,
    options,
    services,
    settings_of,
    subscriber_user_of,
)
from tests.deploy.conftest import run_tool_lines


@dataclass(frozen=True)
class Principal:
    """Whose private keys and passwords a service may hold."""

    keys: frozenset[tuple[str, str]]  # (holder, kind): holder an authority id or "<CC> CA"
    users: frozenset[str]  # RabbitMQ users


KINDS = ("signing", "key-agreement")


def topology_users(country: str) -> set[str]:
    """The RabbitMQ users `topology-<country>`'s plan makes, as the real provisioning plans them."""
    args = command(services()[f"topology-{country}"])
    brokers = provisioning.parse_brokers(
        options(args, "--broker"), plaintext_hosts=["rabbitmq-tj", "rabbitmq-ru"]
    )
    return set(provisioning.needed_users(provisioning.plans_for(brokers, [args[args.index("--local") + 1]])))


def principal_of(
    name: str, spec: dict[str, Any], agreement: Agreement, volumes: dict[str, Path]
) -> Principal:
    args = command(spec)
    none: frozenset[Any] = frozenset()
    if args[:1] == ["gateway"]:
        country = settings_of(spec).country
        holders = {agreement.gateway(country).id, *submitting_authorities(agreement, country)}
        return Principal(
            frozenset((holder, kind) for holder in holders for kind in KINDS),
            frozenset({f"{country.lower()}-gateway"}),
        )
    if args[:2] == ["api", "serve"]:
        country = settings_of(spec).country
        ministries = submitting_authorities(agreement, country)
        return Principal(
            frozenset((ministry, "key-agreement") for ministry in ministries),
            frozenset(submitter_user(country.lower(), country.lower(), ministry) for ministry in ministries),
        )
    if args[:1] == ["subscribe"]:
        authority = args[args.index("--as") + 1]
        return Principal(
            frozenset({(authority, "key-agreement")}), frozenset({subscriber_user_of(spec, volumes)})
        )
    if args[:2] == ["topology", "apply"]:
        return Principal(none, frozenset(topology_users(args[args.index("--local") + 1])))
    if args[:1] == ["keys"] or name.startswith("keys-"):
        # The country's operator: its CA and every key it issued; the passwords of the subscribers'
        # users it writes into their kits.
        country = name.removeprefix("keys-present-").removeprefix("keys-")
        holders = {f"{country.upper()} CA"} | {
            a.id for a in agreement.authorities if a.country == country.upper()
        }
        subscribers = {user for user in topology_users(country) if user.startswith(f"{country}-sub-")}
        return Principal(
            frozenset((h, kind) for h in holders for kind in (*KINDS, "ca")), frozenset(subscribers)
        )
    return Principal(none, none)


def private_key_owner(relative: PurePosixPath) -> tuple[str, str] | None:
    """Whose private key a file of a key store is (keys/README.md's layout), None if public."""
    parts = relative.parts
    if "private" not in parts:
        return None
    at = parts.index("private")
    if at >= 2 and parts[at - 1] == "ca":
        return (f"{parts[at - 2]} CA", "ca")
    if at >= 2 and parts[at - 1] == "encryption":
        return (parts[at - 2], "key-agreement")
    return (parts[at - 1], "signing")


def visible_files(spec: dict[str, Any], volumes: dict[str, Path]) -> Iterator[tuple[Mount, PurePosixPath]]:
    """Every file the service's container sees through its mounts, by its path inside the container."""
    for mount in mounts(spec):
        source = volumes[mount.source] if mount.named else ROOT / mount.source
        if source.is_file():
            yield mount, mount.target
            continue
        for path in source.rglob("*"):
            inside = mount.target / PurePosixPath(path.relative_to(source).as_posix())
            if path.is_file() and mount_of(spec, inside) == mount and not hidden(spec, inside):
                yield mount, inside


def test_no_container_sees_a_private_key_but_its_own(volumes: dict[str, Path]) -> None:
    agreement = load_agreement()
    seen: dict[str, set[tuple[str, str]]] = {}
    for name, spec in services().items():
        principal = principal_of(name, spec, agreement, volumes)
        held = set()
        for mount, inside in visible_files(spec, volumes):
            owner = private_key_owner(inside.relative_to(mount.target))
            if owner is None:
                continue
            assert owner in principal.keys, f"{name} sees {owner[0]}'s {owner[1]} private key at {inside}"
            held.add(owner)
        seen[name] = held
    for name, spec in services().items():
        args = command(spec)
        if "--kit" in args:
            kit = mount_of(spec, PurePosixPath(args[args.index("--kit") + 1]))
            assert kit is not None, f"{name}'s kit is not mounted"
            assert kit.read_only, f"{name} could change its own kit"
    # The check bites: each holds what it needs, and the hidden keys are there to be hidden.
    assert ("TJ-GW", "signing") in seen["gateway-tj"]
    assert ("RU-MVD", "signing") in seen["gateway-ru"]
    assert ("TJ-CONSULATE-MOSCOW", "key-agreement") not in seen["gateway-tj"]
    assert ("TJ CA", "ca") not in seen["gateway-tj"]
    assert seen["api-tj"] == {("TJ-MOL", "key-agreement"), ("TJ-MVD", "key-agreement")}
    assert seen["consulate-tj-moscow"] == {("TJ-CONSULATE-MOSCOW", "key-agreement")}
    assert ("TJ CA", "ca") in seen["keys-tj"]


def test_every_hidden_key_folder_exists_after_init(volumes: dict[str, Path]) -> None:
    # A tmpfs over a folder the volume lacks would make it there, owned by root.
    for name, spec in services().items():
        for target in map(PurePosixPath, spec.get("tmpfs", [])):
            mount = mount_of(spec, target)
            assert mount is not None, f"{name}: {target} hides nothing mounted"
            assert mount.named, f"{name}: {target} is not in a named volume"
            folder = volumes[mount.source] / target.relative_to(mount.target)
            assert folder.is_dir(), f"{name}: {folder} is not made by `broker init`"


def test_no_container_holds_a_password_but_its_own_users(volumes: dict[str, Path]) -> None:
    agreement = load_agreement()
    for name, spec in services().items():
        environment = spec.get("environment") or {}
        principal = principal_of(name, spec, agreement, volumes)
        given = {key for key in environment if key.startswith(PASSWORD_ENV_PREFIX)}
        allowed = {password_variable(user) for user in principal.users}
        assert given <= allowed, f"{name} holds the passwords {sorted(given - allowed)}"
        assert "EXCHANGE_SECRETS_FILE" not in environment, f"{name} reads the secrets file of every user"
        if command(spec)[:2] != ["topology", "apply"] and not name.startswith("rabbitmq-"):
            assert not {"RABBITMQ_ADMIN_PASSWORD", "RABBITMQ_DEFAULT_PASS"} & set(environment), (
                f"{name} holds a broker administrator's password"
            )
        if command(spec)[:1] == ["gateway"]:
            user = settings_of(spec).amqp_url.split("//")[1].split("@")[0]
            assert user in principal.users, f"{name} logs in as {user}"
            assert password_variable(user) in given, f"{name} is not given {user}'s password"


def test_whoever_logs_in_has_the_password_its_topology_sets(volumes: dict[str, Path]) -> None:
    raw = compose_document()["services"]
    interpolated = services()
    logged_in: set[str] = set()
    for name, spec in interpolated.items():
        environment = spec.get("environment") or {}
        if command(spec)[:1] in (["gateway"], ["api"], ["subscribe"]):
            country = settings_of(spec, volumes).country.lower()
        elif name.startswith("keys-"):
            country = name.rsplit("-", 1)[-1]
        else:
            continue
        topology = f"topology-{country}"
        for variable in (key for key in environment if key.startswith(PASSWORD_ENV_PREFIX)):
            # The same .env variable on both sides: the password set is the password used.
            assert raw[name]["environment"][variable] == raw[topology]["environment"].get(variable), (
                f"{name}: {variable} is not the one {topology} sets"
            )
            logged_in.add(variable)
        if "--kit" in command(spec):
            settings = settings_of(spec, volumes)
            user = subscriber_user_of(spec, volumes)
            assert settings.secrets_file is not None
            kept = json.loads(
                host_path(spec, PurePosixPath(settings.secrets_file), volumes).read_text("utf-8")
            )
            assert set(kept) == {user}, f"{name}'s kit holds passwords of {sorted(kept)}"
            expected = interpolated[topology]["environment"][password_variable(user)]
            assert kept[user] == expected, f"{name}'s kit does not hold the password {topology} sets"
            logged_in.add(password_variable(user))
    assert len(logged_in) >= 6
    for country in ("tj", "ru"):
        # Users no service logs in as (the shovel's, subscribers without a service) may be generated.
        given = set(raw[f"topology-{country}"]["environment"])
        needed = {password_variable(user) for user in topology_users(country)}
        assert not (needed & logged_in) - given


def test_the_key_rotation_lines_reach_the_peer(volumes: dict[str, Path]) -> None:
    # Last in this module: it changes the volumes the tests above read.
    ours, theirs = (KeyStore(root=volumes[f"country-{cc}"] / "keys") for cc in ("tj", "ru"))
    before = {cert.serial_number for cert in ours.signing_certificates("TJ-MOL")}

    assert run_tool_lines("Key rotation", volumes["bundles"].parents[1], volumes) == 3

    rotated = {cert.serial_number for cert in ours.signing_certificates("TJ-MOL")} - before
    assert len(rotated) == 1, "keys rotate issued one new signing key"
    known = {r.serial for r in theirs.inventory() if r.holder == "TJ-MOL" and r.usage == "signing"}
    assert rotated <= known, "RU does not know the new key after the export and import lines"
