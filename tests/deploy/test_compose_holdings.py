"""Who holds what in docker-compose.yml. README's "First start" is run as written (each `docker
compose run` of the operator's tool in a folder standing for its container, its volumes linked in):
the real `broker init`, bundles exported and imported, the consulate's kit assembled. Then no
container sees a private key but its own principal's, and none is given a password but its own
users'."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from broker.cli.app import main as broker_main
from broker.core.agreement import Agreement, load_agreement
from broker.exchange import provisioning
from broker.exchange.ministries import submitting_authorities
from broker.state.keystore import KeyStore
from broker.state.rabbitmq_passwords import PASSWORD_ENV_PREFIX, password_variable
from tests.deploy.compose_file import (
    ROOT,
    TOOLS_PROFILE,
    Mount,
    command,
    compose_document,
    hidden,
    mount_of,
    mounts,
    named_volumes,
    options,
    readme_compose_lines,
    services,
    settings_of,
    split_run,
    subscriber_user_of,
)

# --- who holds what --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """Whose private keys and passwords a service may hold."""

    keys: frozenset[tuple[str, str]]  # (holder, kind): holder an authority id or "<CC> CA"
    users: frozenset[str]  # RabbitMQ users


KINDS = ("signing", "key-agreement")


def principal_of(name: str, spec: dict[str, Any], agreement: Agreement) -> Principal:
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
            frozenset(_submitter_user(country, ministry) for ministry in ministries),
        )
    if args[:1] == ["subscribe"]:
        authority = args[args.index("--as") + 1]
        return Principal(frozenset({(authority, "key-agreement")}), frozenset({subscriber_user_of(spec)}))
    if args[:2] == ["topology", "apply"]:
        local = args[args.index("--local") + 1]
        brokers = provisioning.parse_brokers(
            options(args, "--broker"), plaintext_hosts=["rabbitmq-tj", "rabbitmq-ru"]
        )
        users = set(provisioning.needed_users(provisioning.plans_for(brokers, [local])))
        # The country's subscribers' own users (made by the topology once issue 17 is on main).
        users |= {
            subscriber_user_of(other)
            for other in services().values()
            if command(other)[:1] == ["subscribe"] and settings_of(other).country.lower() == local
        }
        return Principal(none, frozenset(users))
    if args[:1] == ["keys"] or name.startswith("keys-"):
        # The country's operator: its CA and every key it issued to its authorities.
        country = name.removeprefix("keys-present-").removeprefix("keys-").upper()
        holders = {f"{country} CA"} | {a.id for a in agreement.authorities if a.country == country}
        return Principal(frozenset((h, kind) for h in holders for kind in (*KINDS, "ca")), none)
    return Principal(none, none)


def _submitter_user(country: str, authority: str) -> str:
    from broker.exchange.ministries import submitter_user  # noqa: PLC0415

    return submitter_user(country.lower(), country.lower(), authority)


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


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The named volumes filled by README's "First start" run as written, each `docker compose run`
    in a folder standing for its container: its working_dir, with its mounts linked in."""
    root = tmp_path_factory.mktemp("compose")
    made = {name: root / "volumes" / name for name in named_volumes()}
    for path in made.values():
        path.mkdir(parents=True)
    assert run_tool_lines("First start", root, made) >= 9
    kit = made["kit-tj-consulate-moscow"] / "keys"
    assert KeyStore(root=kit).decryptor("TJ-CONSULATE-MOSCOW").keys, "the kit opens what is sealed to it"
    return made


def run_tool_lines(subsection: str, root: Path, made: dict[str, Path]) -> int:
    """Run the `docker compose run` lines of one part of README's Deployment section; how many."""
    ran = len(list(root.glob("container-*")))
    first = ran
    for words in readme_compose_lines(subsection):
        if words[0] != "run":
            continue
        entrypoint, service, args = split_run(words)
        spec = services()[service]
        assert TOOLS_PROFILE in spec.get("profiles", []), f"{service}: only the operator's tool makes keys"
        container = _container(root / f"container-{ran}", spec, made)
        with contextlib.chdir(container):
            if entrypoint is None:
                assert broker_main(args) == 0, f"broker {' '.join(args)} failed"
            else:
                subprocess.run([entrypoint, *args], check=True, timeout=60)
        ran += 1
    return ran - first


def _container(folder: Path, spec: dict[str, Any], made: dict[str, Path]) -> Path:
    """A folder standing for the service's working_dir, its named volumes linked in where mounted."""
    working = PurePosixPath(spec["working_dir"])
    folder.mkdir()
    for mount in mounts(spec):
        assert mount.named, "the operator's tool mounts volumes only"
        assert working in mount.target.parents, f"{mount.target} is not under {working}"
        link = folder / mount.target.relative_to(working).as_posix()
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(made[mount.source], target_is_directory=True)
    return folder


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
        principal = principal_of(name, spec, agreement)
        held = set()
        for mount, inside in visible_files(spec, volumes):
            owner = private_key_owner(inside.relative_to(mount.target))
            if owner is None:
                continue
            assert owner in principal.keys, f"{name} sees {owner[0]}'s {owner[1]} private key at {inside}"
            held.add(owner)
        seen[name] = held
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


def test_no_container_holds_a_password_but_its_own_users() -> None:
    agreement = load_agreement()
    for name, spec in services().items():
        environment = spec.get("environment") or {}
        principal = principal_of(name, spec, agreement)
        given = {key for key in environment if key.startswith(PASSWORD_ENV_PREFIX)}
        allowed = {password_variable(user) for user in principal.users}
        assert given <= allowed, f"{name} holds the passwords {sorted(given - allowed)}"
        assert "EXCHANGE_SECRETS_FILE" not in environment, f"{name} reads the secrets file of every user"
        if command(spec)[:2] != ["topology", "apply"]:
            assert not {"RABBITMQ_ADMIN_PASSWORD", "RABBITMQ_DEFAULT_PASS"} & set(
                environment
            ) or name.startswith("rabbitmq-"), f"{name} holds a broker administrator's password"
        if command(spec)[:1] in (["gateway"], ["subscribe"]):
            # It logs in as its own user, with the password it was given.
            user = settings_of(spec).amqp_url.split("//")[1].split("@")[0]
            assert user in principal.users, f"{name} logs in as {user}"
            assert password_variable(user) in given, f"{name} is not given {user}'s password"
    for name in ("topology-tj", "topology-ru"):
        spec = services()[name]
        args = command(spec)
        brokers = provisioning.parse_brokers(
            options(args, "--broker"), plaintext_hosts=["rabbitmq-tj", "rabbitmq-ru"]
        )
        needed = provisioning.needed_users(provisioning.plans_for(brokers, [args[args.index("--local") + 1]]))
        missing = {password_variable(user) for user in needed} - set(spec["environment"])
        assert not missing, f"{name} would generate passwords no service knows: {sorted(missing)}"
    # Whoever logs in gets the very password the topology set for its user.
    for name, spec in services().items():
        country = (spec.get("environment") or {}).get("EXCHANGE_COUNTRY", "").lower()
        if not country:
            continue
        topology = services()[f"topology-{country}"]["environment"]
        raw = compose_document()["services"]
        for variable in (key for key in spec["environment"] if key.startswith(PASSWORD_ENV_PREFIX)):
            assert variable in topology, f"{name} logs in as a user topology-{country} does not make"
            given = raw[name]["environment"][variable]
            assert given == raw[f"topology-{country}"]["environment"][variable], f"{name}: {variable}"


def test_the_key_rotation_lines_reach_the_peer(volumes: dict[str, Path]) -> None:
    # Last in this module: it changes the volumes the tests above read.
    ours, theirs = (KeyStore(root=volumes[f"country-{cc}"] / "keys") for cc in ("tj", "ru"))
    before = {cert.serial_number for cert in ours.signing_certificates("TJ-MOL")}

    assert run_tool_lines("Key rotation", volumes["bundles"].parents[1], volumes) == 3

    rotated = {cert.serial_number for cert in ours.signing_certificates("TJ-MOL")} - before
    assert len(rotated) == 1, "keys rotate issued one new signing key"
    known = {r.serial for r in theirs.inventory() if r.holder == "TJ-MOL" and r.usage == "signing"}
    assert rotated <= known, "RU does not know the new key after the export and import lines"
