"""docker-compose.yml checked against the code (no Docker engine runs here).

- Debian's docker-compose validates the file whole, as the operator's `docker compose config` would.
- Every service's command parses with the real `broker` command line (click, without running it).
- Every `${VAR}` is in .env.example with its meaning; a missing password stops compose.
- Every path the settings use (state, keys, API tokens, the subscriber's ledger and alerts, the
  topology's secrets) lies in a volume; state in a writable named volume the image owns; a gateway's
  key store writable, so trust updates from the peer are kept.
- With key stores made by the real `broker init`, bundles exchanged and a consulate kit assembled,
  no container sees a private key but its own principal's, and no password but its own users'.
- The health check asks /readyz on the status port, and fails on a 503 from the real status server.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import typer
import yaml
from typer.main import get_command

from broker.cli.app import app
from broker.cli.app import main as broker_main
from broker.core.agreement import Agreement, load_agreement
from broker.exchange import provisioning
from broker.exchange.health import Check, Readiness
from broker.exchange.metrics import GatewayMetrics
from broker.exchange.ministries import submitting_authorities
from broker.exchange.status_server import StatusServer
from broker.state.country_dir import set_up_country
from broker.state.keystore import KeyStore
from broker.state.rabbitmq_passwords import PASSWORD_ENV_PREFIX, password_variable
from broker.state.settings import ExchangeSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
TOOLS_PROFILE = "tools"


# --- reading the files ---------------------------------------------------------------------------


@cache
def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text("utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """What compose makes of `value` with `env` (.env): ${VAR}, ${VAR:-default}, ${VAR:?error}."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if operator and operator.endswith("?"):
            raise AssertionError(f"${{{name}}} is required: {argument}")
        return argument or ""

    return VARIABLE.sub(one, value)


@cache
def compose_document() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text("utf-8"))
    assert isinstance(document, dict)
    return document


@cache
def services() -> dict[str, dict[str, Any]]:
    found = interpolate(compose_document()["services"], env_example())
    assert isinstance(found, dict)
    return found


@cache
def named_volumes() -> frozenset[str]:
    return frozenset(compose_document().get("volumes") or {})


@dataclass(frozen=True)
class Mount:
    source: str
    target: PurePosixPath
    read_only: bool
    named: bool  # a named volume, not a folder of the host


def mounts(spec: dict[str, Any]) -> list[Mount]:
    found = []
    for entry in spec.get("volumes", []):
        source, target, *mode = str(entry).split(":")
        found.append(
            Mount(
                source=source,
                target=PurePosixPath(target),
                read_only="ro" in mode,
                named=source in named_volumes(),
            )
        )
    return found


def mount_of(spec: dict[str, Any], path: PurePosixPath) -> Mount | None:
    """The mount `path` lies in (the deepest), or None when it is in the container's own layer."""
    holding = [m for m in mounts(spec) if path == m.target or m.target in path.parents]
    return max(holding, key=lambda m: len(m.target.parts), default=None)


def hidden(spec: dict[str, Any], path: PurePosixPath) -> bool:
    """Whether `path` is covered by one of the service's (empty) tmpfs mounts."""
    return any(path == PurePosixPath(t) or PurePosixPath(t) in path.parents for t in spec.get("tmpfs", []))


def command(spec: dict[str, Any]) -> list[str]:
    value = spec.get("command", [])
    assert isinstance(value, list), "commands are lists: no shell, every word is the CLI's"
    return [str(word) for word in value]


def runs_broker(spec: dict[str, Any]) -> bool:
    """Services of the image built from this tree (its entrypoint is `broker`)."""
    return "build" in spec


def running(name: str, spec: dict[str, Any]) -> bool:
    """Started by `docker compose up` (the tools profile is only run by hand)."""
    return TOOLS_PROFILE not in spec.get("profiles", [])


# --- the validator ---------------------------------------------------------------------------------


def docker_compose() -> str:
    found = shutil.which("docker-compose")
    assert found, "docker-compose is missing: scripts/ensure-services.sh installs it (apt)"
    return found


def validate(env_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            docker_compose(),
            "-f",
            str(COMPOSE),
            "--env-file",
            str(env_file),
            "--profile",
            TOOLS_PROFILE,
            "config",
            "-q",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": os.environ["PATH"]},  # only the env file: nothing leaks in from this shell
        timeout=120,
    )


def test_docker_compose_accepts_the_file_with_the_example_env() -> None:
    checked = validate(ENV_EXAMPLE)
    assert checked.returncode == 0, checked.stderr


def test_docker_compose_refuses_to_start_without_a_password(tmp_path: Path) -> None:
    partial = tmp_path / "env"
    kept = [
        line for line in ENV_EXAMPLE.read_text().splitlines() if not line.startswith("TJ_GATEWAY_PASSWORD=")
    ]
    partial.write_text("\n".join(kept) + "\n")

    checked = validate(partial)

    assert checked.returncode != 0
    assert "TJ_GATEWAY_PASSWORD" in checked.stderr or "see .env.example" in checked.stderr


# --- variables -------------------------------------------------------------------------------------


def test_every_variable_is_in_env_example_with_its_meaning() -> None:
    used = {match.group(1) for match in VARIABLE.finditer(COMPOSE.read_text("utf-8"))}
    listed = env_example()
    assert used, "the compose file reads its secrets from .env"
    assert used <= set(listed), f"not in .env.example: {sorted(used - set(listed))}"
    # Nothing listed that compose never reads (COMPOSE_* are compose's own settings).
    assert {name for name in listed if not name.startswith("COMPOSE_")} <= used
    lines = ENV_EXAMPLE.read_text("utf-8").splitlines()
    for index, line in enumerate(lines):
        if not line or line.startswith("#"):
            continue
        above = index - 1
        while above >= 0 and lines[above] and not lines[above].startswith("#"):
            above -= 1  # a group of variables under one comment
        assert above >= 0, f"{line.split('=')[0]} has no comment saying what it is"
        assert lines[above].startswith("#"), f"{line.split('=')[0]} has no comment saying what it is"


def test_required_secrets_have_no_default() -> None:
    for match in VARIABLE.finditer(COMPOSE.read_text("utf-8")):
        if match.group(1).endswith("PASSWORD"):
            assert match.group(2) == ":?", f"{match.group(0)}: a password must be given, never defaulted"


# --- commands --------------------------------------------------------------------------------------


# Typer vendors click in some releases: its usage error and group classes are found through typer.
USAGE_ERROR: type[Exception] = next(cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "UsageError")


def _pending(context: Any) -> list[str]:
    """The words a group's context leaves for its sub-command (`protected_args` in click's API)."""
    protected = getattr(context, "protected_args", None)
    if protected is None:
        protected = getattr(context, "_protected_args", [])
    return [*protected, *context.args]


def parse(args: list[str]) -> list[str]:
    """Parse `args` as `broker` would, down to the command, without running it; the command path."""
    group: Any = get_command(app)
    context = group.make_context("broker", list(args), resilient_parsing=False)
    path: list[str] = []
    command_ = group
    remaining = _pending(context)
    while hasattr(command_, "commands") and remaining:
        name, found, remaining = command_.resolve_command(context, remaining)
        assert found is not None
        assert name is not None
        path.append(name)
        context = found.make_context(name, list(remaining), parent=context, resilient_parsing=False)
        remaining = _pending(context) if hasattr(found, "commands") else context.args
        command_ = found
    assert not hasattr(command_, "commands"), f"{args} names a group, not a command"
    assert not remaining, f"{args}: {remaining} left over"
    return path


def test_every_command_parses_with_the_cli() -> None:
    parsed = {}
    for name, spec in services().items():
        if runs_broker(spec) and running(name, spec):
            parsed[name] = parse(command(spec))
    assert parsed["gateway-tj"] == ["gateway"]
    assert parsed["api-ru"] == ["api", "serve"]
    assert parsed["topology-tj"] == ["topology", "apply"]
    assert parsed["consulate-tj-moscow"] == ["subscribe"]
    assert parsed["keys-present-ru"] == ["keys", "list"]


@pytest.mark.parametrize(
    "args",
    [
        ["gateway", "--country"],
        ["gateway", "--county", "TJ"],
        ["topology", "apply", "--plaintext_host", "rabbitmq-tj"],
        ["topology"],
        ["subscribe", "--as", "TJ-CONSULATE-MOSCOW"],  # --types is required
    ],
)
def test_the_parse_check_refuses_what_the_cli_refuses(args: list[str]) -> None:
    with pytest.raises((USAGE_ERROR, AssertionError)):
        parse(args)


def test_everything_waits_for_the_topology_and_the_key_stores() -> None:
    found = services()
    init = {name for name, spec in found.items() if command(spec)[:2] == ["topology", "apply"]}
    assert init == {"topology-tj", "topology-ru"}
    for name in init:
        assert found[name].get("restart") == "no", f"{name} runs once per `up`"
    for name, spec in found.items():
        if not (runs_broker(spec) and running(name, spec)) or name in init or name.startswith("keys-present"):
            continue
        waited = _waits_for(found, name)
        country = _settings(spec).country.lower()
        assert f"topology-{country}" in waited, f"{name} does not wait for its topology"
        if command(spec)[0] == "gateway":
            assert f"keys-present-{country}" in waited, f"{name} starts on an empty key store"


def _waits_for(found: dict[str, dict[str, Any]], name: str) -> set[str]:
    """Services `name` waits to have completed successfully, directly or through others."""
    waited: set[str] = set()
    for other, condition in (found[name].get("depends_on") or {}).items():
        if condition.get("condition") == "service_completed_successfully":
            waited.add(other)
        waited |= _waits_for(found, other)
    return waited


# --- settings and state ------------------------------------------------------------------------------


def _settings(spec: dict[str, Any]) -> ExchangeSettings:
    """The settings the service's `broker` builds from its environment (and nothing else)."""
    environment = {key: str(value) for key, value in (spec.get("environment") or {}).items()}
    saved = dict(os.environ)
    try:
        for key in list(os.environ):
            if key.startswith(("EXCHANGE_", PASSWORD_ENV_PREFIX)):
                del os.environ[key]
        os.environ.update(environment)
        return ExchangeSettings.load(None)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def exchange_services() -> dict[str, dict[str, Any]]:
    """Services whose command reads the exchange settings: gateway, api, subscribe."""
    return {
        name: spec
        for name, spec in services().items()
        if runs_broker(spec) and command(spec)[:1] in (["gateway"], ["api"], ["subscribe"])
    }


def _image_directories() -> set[PurePosixPath]:
    """Directories the Dockerfile makes for the service user (a named volume takes their owner)."""
    text = DOCKERFILE.read_text("utf-8").replace("\\\n", " ")
    made: set[PurePosixPath] = set()
    for words in (line.split() for line in text.splitlines() if "install -d" in line):
        made |= {PurePosixPath(word) for word in words if word.startswith("/var/lib/exchange")}
    return made


def _state_paths(spec: dict[str, Any], settings: ExchangeSettings) -> dict[str, PurePosixPath]:
    paths = {
        "state folder (outbox, submissions, key vault, ledgers)": PurePosixPath(settings.country_state_dir)
    }
    args = command(spec)
    if args[:2] == ["api", "serve"]:
        paths["API tokens"] = PurePosixPath(settings.api_tokens_path)
    if args[0] == "subscribe":
        authority = args[args.index("--as") + 1]
        paths["subscriber ledger"] = (
            PurePosixPath(settings.country_state_dir) / f"subscriber-{authority}.sqlite"
        )
        paths["alerts file"] = PurePosixPath(args[args.index("--out") + 1])
    return paths


def test_every_state_path_is_in_a_writable_named_volume_the_image_owns() -> None:
    checked = 0
    for name, spec in exchange_services().items():
        settings = _settings(spec)
        for what, path in _state_paths(spec, settings).items():
            mount = mount_of(spec, path)
            assert mount is not None, f"{name}: {what} {path} is in the container's own layer"
            assert mount.named, f"{name}: {what} is on {mount.source}, not a named volume"
            assert not mount.read_only, f"{name}: {what} is on a read-only mount"
            assert mount.target in _image_directories(), f"{name}: {mount.target} is not made in the image"
            checked += 1
        keys = mount_of(spec, PurePosixPath(settings.keys_dir))
        assert keys is not None, f"{name}: keys_dir {settings.keys_dir} is not mounted"
        assert keys.target in _image_directories()
    assert checked >= 9


def test_a_gateway_can_keep_trust_updates() -> None:
    for name, spec in exchange_services().items():
        if command(spec)[0] != "gateway":
            continue
        settings = _settings(spec)
        peers = PurePosixPath(settings.keys_dir) / "peers"
        mount = mount_of(spec, peers)
        assert mount is not None, f"{name}: {peers} is not mounted"
        assert not mount.read_only, f"{name}: trust updates would be held forever"
        assert not hidden(spec, peers), f"{name}: {peers} is under a tmpfs"


def test_the_topology_secrets_and_the_brokers_data_are_in_volumes() -> None:
    found = services()
    for name in ("topology-tj", "topology-ru"):
        args = command(found[name])
        secrets = PurePosixPath(args[args.index("--secrets") + 1])
        mount = mount_of(found[name], secrets)
        assert mount is not None, name
        assert mount.named, name
        assert not mount.read_only, name
    for name, data in (
        ("rabbitmq-tj", "/var/lib/rabbitmq"),
        ("rabbitmq-ru", "/var/lib/rabbitmq"),
        ("postgres", "/var/lib/postgresql/data"),
    ):
        mount = mount_of(found[name], PurePosixPath(data))
        assert mount is not None, name
        assert mount.named, name


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
        country = _settings(spec).country
        holders = {agreement.gateway(country).id, *submitting_authorities(agreement, country)}
        return Principal(
            frozenset((holder, kind) for holder in holders for kind in KINDS),
            frozenset({f"{country.lower()}-gateway"}),
        )
    if args[:2] == ["api", "serve"]:
        country = _settings(spec).country
        ministries = submitting_authorities(agreement, country)
        return Principal(
            frozenset((ministry, "key-agreement") for ministry in ministries),
            frozenset(_submitter_user(country, ministry) for ministry in ministries),
        )
    if args[:1] == ["subscribe"]:
        authority = args[args.index("--as") + 1]
        return Principal(frozenset({(authority, "key-agreement")}), frozenset({_subscriber_user(spec)}))
    if args[:2] == ["topology", "apply"]:
        local = args[args.index("--local") + 1]
        brokers = provisioning.parse_brokers(
            _options(args, "--broker"), plaintext_hosts=["rabbitmq-tj", "rabbitmq-ru"]
        )
        users = set(provisioning.needed_users(provisioning.plans_for(brokers, [local])))
        # The country's subscribers' own users (made by the topology once issue 17 is on main).
        users |= {
            _subscriber_user(other)
            for other in services().values()
            if command(other)[:1] == ["subscribe"] and _settings(other).country.lower() == local
        }
        return Principal(none, frozenset(users))
    if args[:1] == ["keys"] or name.startswith("keys-"):
        # The country's operator: its CA and every key it issued to its authorities.
        country = name.removeprefix("keys-present-").removeprefix("keys-").upper()
        holders = {f"{country} CA"} | {a.id for a in agreement.authorities if a.country == country}
        return Principal(frozenset((h, kind) for h in holders for kind in (*KINDS, "ca")), none)
    return Principal(none, none)


def _subscriber_user(spec: dict[str, Any]) -> str:
    """The RabbitMQ user a subscriber logs in as: its own, no gateway's, ministry's or link's."""
    user = _settings(spec).amqp_url.split("//", 1)[1].split("@", 1)[0]
    country = _settings(spec).country.lower()
    assert user.startswith(f"{country}-sub-"), f"a subscriber logs in as its own user, not {user}"
    return user


def _options(args: list[str], option: str) -> list[str]:
    return [args[i + 1] for i, word in enumerate(args) if word == option]


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
    """The named volumes filled as the README's first start fills them, with the real commands'
    code: each country's folder (`broker init`), both bundles exchanged, the consulate's kit."""
    root = tmp_path_factory.mktemp("volumes")
    agreement = load_agreement()
    now = datetime.now(UTC)
    made = {name: root / name for name in named_volumes()}
    for path in made.values():
        path.mkdir()
    stores = {}
    for country in agreement.countries:
        folder = made[f"country-{country.lower()}"]
        set_up_country(
            folder,
            country=country,
            agreement=agreement,
            amqp_url=f"amqp://{country.lower()}-gateway@127.0.0.1:5672/{country.lower()}",
            secrets_file=folder / "unused-secrets.json",
            now=now,
        )
        stores[country] = KeyStore(root=folder / "keys")
    bundles = {}
    for country, store in stores.items():
        bundles[country] = made["bundles"] / f"{country.lower()}-bundle.pem"
        _broker(
            "keys", "export", "--country", country, "--root", str(store.root), "--out", str(bundles[country])
        )
    for country, store in stores.items():
        for peer in agreement.countries:
            if peer != country:
                _broker("keys", "import", "--root", str(store.root), str(bundles[peer]))
    _assemble_kit(made["kit-tj-consulate-moscow"] / "keys", stores["TJ"], bundles, "TJ-CONSULATE-MOSCOW")
    return made


def _broker(*args: str) -> None:
    """One `broker` command, in this process, as the operator types it."""
    assert broker_main(list(args)) == 0, f"broker {' '.join(args)} failed"


def _assemble_kit(kit: Path, store: KeyStore, bundles: dict[str, Path], authority: str) -> None:
    """The consulate's kit as README, "First start", assembles it until `broker keys kit` exists:
    both public bundles imported, and the consulate's own key-agreement key beside them."""
    for bundle in bundles.values():
        _broker("keys", "import", "--root", str(kit), str(bundle))
    country = authority.split("-", 1)[0]
    own = Path(country, "authorities", authority, "encryption")
    shutil.copytree(store.root / own, kit / own)
    assert KeyStore(root=kit).decryptor(authority).keys, "the kit opens what is sealed for the consulate"


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
            user = _settings(spec).amqp_url.split("//")[1].split("@")[0]
            assert user in principal.users, f"{name} logs in as {user}"
            assert password_variable(user) in given, f"{name} is not given {user}'s password"
    for name in ("topology-tj", "topology-ru"):
        spec = services()[name]
        args = command(spec)
        brokers = provisioning.parse_brokers(
            _options(args, "--broker"), plaintext_hosts=["rabbitmq-tj", "rabbitmq-ru"]
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


# --- health and metrics --------------------------------------------------------------------------------


def test_gateways_publish_their_status_port_and_check_readyz() -> None:
    for name, spec in exchange_services().items():
        if command(spec)[0] != "gateway":
            continue
        settings = _settings(spec)
        assert settings.metrics_port is not None, f"{name} serves no /readyz"
        assert settings.metrics_address == "0.0.0.0", f"{name}'s status port is not reachable from outside"
        published = [str(port).rsplit(":", 1)[-1] for port in spec.get("ports", [])]
        assert str(settings.metrics_port) in published, f"{name} does not publish its metrics port"
        probe = " ".join(spec["healthcheck"]["test"])
        assert "/readyz" in probe, name
        assert "EXCHANGE_METRICS_PORT" in probe, name


def test_no_two_services_publish_the_same_host_port() -> None:
    published = [
        (str(port).rsplit(":", 2)[0] if str(port).count(":") == 2 else "0.0.0.0", str(port).split(":")[-2])
        for spec in services().values()
        for port in spec.get("ports", [])
    ]
    assert len(published) >= 4
    assert len(set(published)) == len(published), f"a host port is published twice: {published}"


@pytest.mark.parametrize("ready", [True, False])
def test_the_health_check_follows_the_real_status_server(ready: bool) -> None:
    probe = services()["gateway-tj"]["healthcheck"]["test"]
    assert probe[:3] == ["CMD", "python", "-c"]

    async def run() -> int:
        async def readiness() -> Readiness:
            return Readiness(checks={"peer_link": Check(ok=ready, detail="as the test says")})

        server = StatusServer(metrics=GatewayMetrics(), readiness=readiness, address="127.0.0.1", port=0)
        await server.start()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-c", probe[3], env={**os.environ, "EXCHANGE_METRICS_PORT": str(server.port)}
            )
            return await asyncio.wait_for(process.wait(), timeout=60)
        finally:
            await server.close()

    status = asyncio.run(run())
    assert (status == 0) is ready


# --- the image -----------------------------------------------------------------------------------------


def test_the_image_installs_the_tree_as_the_readme_does() -> None:
    text = DOCKERFILE.read_text("utf-8")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    copied = set(re.findall(r"^COPY (\S+) ", text, flags=re.MULTILINE))
    # The packages, and schemas/xsd, which the Russian adapter reads beside its source tree.
    assert {*packages, "schemas"} <= copied
    assert "pip install --no-cache-dir -e ." in text  # scripts/setup-venv.sh installs editable too
    assert 'ENTRYPOINT ["broker"]' in text
    assert "broker" in project["project"]["scripts"]
    assert re.search(r"^USER exchange$", text, flags=re.MULTILINE), "the services do not run as root"
    ignored = [line for line in DOCKERIGNORE.read_text("utf-8").splitlines() if line and line[0] != "#"]
    assert ignored[0] == "*", "the build context is only what is let in by name"
    assert "**/private/" in ignored
    assert "**/*.key.pem" in ignored
    assert not any(line.startswith("!") and ("var" in line or "keys" in line) for line in ignored)


# --- the README's Deployment section -----------------------------------------------------------------


def readme_compose_lines() -> list[list[str]]:
    """Every `docker compose ...` line of README's Deployment section, as words."""
    text = (ROOT / "README.md").read_text("utf-8")
    section = text[text.index("## Deployment") :]
    section = section[: section.index("\n## ", 1)]
    lines = []
    for line in section.splitlines():
        if not line.startswith("docker compose") and " && docker compose" not in line:
            continue
        words = shlex.split(line, comments=True)
        while words:
            part = words[: words.index("&&")] if "&&" in words else words
            words = words[len(part) + 1 :]
            if part[:2] == ["docker", "compose"]:
                lines.append(part[2:])
    return lines


def test_every_compose_command_of_the_readme_names_a_service_and_parses() -> None:
    found = services()
    runs = 0
    for words in readme_compose_lines():
        if words[0] != "run":
            for name in words[1:]:
                if not name.startswith("-") and name in found:
                    break
            else:
                assert words[0] in {"build", "up", "ps"}, f"docker compose {' '.join(words)}: which service?"
            continue
        options = [w for w in words[1:] if w.startswith("-")]
        rest = [w for w in words[1:] if not w.startswith("-")]
        if "--entrypoint" in options:
            rest = rest[1:]  # the entrypoint's own name
        service, args = rest[0], words[words.index(rest[0]) + 1 :]
        assert service in found, f"README runs {service}, which docker-compose.yml does not have"
        if "--entrypoint" not in options:
            parse(args)
            runs += 1
    assert runs >= 10
