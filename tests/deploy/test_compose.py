"""docker-compose.yml checked against the code (no Docker engine runs here).

- Debian's docker-compose validates the file whole, as the operator's `docker compose config` would.
- Every service's command parses with the real `broker` command line (click, without running it).
- Every `${VAR}` is in .env.example with its meaning; a missing password stops compose.
- Every path the settings use (state, keys, API tokens, the subscriber's ledger and alerts, the
  topology's secrets) lies in a volume; state in a writable named volume the image owns; a gateway's
  key store writable, so trust updates from the peer are kept.
- Who holds which key and password: test_compose_holdings.py.
- The health check asks /readyz on the status port, and fails on a 503 from the real status server.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import pytest

from broker.exchange.health import Check, Readiness
from broker.exchange.metrics import GatewayMetrics
from broker.exchange.status_server import StatusServer
from broker.state.settings import ExchangeSettings
from tests.deploy.compose_file import (
    COMPOSE,
    DOCKERFILE,
    DOCKERIGNORE,
    ENV_EXAMPLE,
    ROOT,
    TOOLS_PROFILE,
    USAGE_ERROR,
    VARIABLE,
    command,
    compose_document,
    env_example,
    exchange_services,
    hidden,
    host_path,
    mount_of,
    parse,
    readme_compose_lines,
    running,
    runs_broker,
    services,
    settings_of,
    split_run,
)

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


def test_each_node_has_one_administrator_from_env_and_never_guest() -> None:
    raw = compose_document()["services"]
    nodes = [name for name, spec in raw.items() if str(spec.get("image", "")).startswith("rabbitmq:")]
    assert sorted(nodes) == ["rabbitmq-ru", "rabbitmq-tj"]
    for name in nodes:
        environment = raw[name]["environment"]
        for key in ("RABBITMQ_DEFAULT_USER", "RABBITMQ_DEFAULT_PASS"):
            match = VARIABLE.fullmatch(environment[key])
            assert match is not None, f"{name}: {key} is written in the file"
            assert match.group(2) == ":?", f"{name}: {key} has a default"
        assert services()[name]["environment"]["RABBITMQ_DEFAULT_USER"] != "guest"


def test_required_secrets_have_no_default() -> None:
    for match in VARIABLE.finditer(COMPOSE.read_text("utf-8")):
        if match.group(1).endswith("PASSWORD"):
            assert match.group(2) == ":?", f"{match.group(0)}: a password must be given, never defaulted"


# --- commands --------------------------------------------------------------------------------------


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
        ["subscribe", "--as", "TJ-CONSULATE-MOSCOW", "--count", "some"],
    ],
)
def test_the_parse_check_refuses_what_the_cli_refuses(args: list[str]) -> None:
    with pytest.raises((USAGE_ERROR, AssertionError)):
        parse(args)


def test_everything_waits_for_the_topology_and_the_key_stores(volumes: dict[str, Path]) -> None:
    found = services()
    init = {name for name, spec in found.items() if command(spec)[:2] == ["topology", "apply"]}
    assert init == {"topology-tj", "topology-ru"}
    for name in init:
        assert found[name].get("restart") == "no", f"{name} runs once per `up`"
    for name, spec in found.items():
        if not (runs_broker(spec) and running(name, spec)) or name in init or name.startswith("keys-present"):
            continue
        waited = _waits_for(found, name)
        country = settings_of(spec, volumes).country.lower()
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


def test_every_state_path_is_in_a_writable_named_volume_the_image_owns(volumes: dict[str, Path]) -> None:
    checked = 0
    for name, spec in exchange_services().items():
        settings = settings_of(spec, volumes)
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
        if settings.secrets_file is not None:  # a kit's own password
            assert host_path(spec, PurePosixPath(settings.secrets_file), volumes).is_file(), name
    assert checked >= 9


def test_a_gateway_can_keep_trust_updates() -> None:
    for name, spec in exchange_services().items():
        if command(spec)[0] != "gateway":
            continue
        settings = settings_of(spec)
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


# --- health and metrics --------------------------------------------------------------------------------


def test_gateways_publish_their_status_port_and_check_readyz() -> None:
    for name, spec in exchange_services().items():
        if command(spec)[0] != "gateway":
            continue
        settings = settings_of(spec)
        assert settings.metrics_port is not None, f"{name} serves no /readyz"
        assert settings.metrics_address == "0.0.0.0", f"{name}'s status port is not reachable from outside"
        published = [str(port).rsplit(":", 1)[-1] for port in spec.get("ports", [])]
        assert str(settings.metrics_port) in published, f"{name} does not publish its metrics port"
        probe = " ".join(spec["healthcheck"]["test"])
        assert "/readyz" in probe, name
        assert "EXCHANGE_METRICS_PORT" in probe, name


def test_http_apis_publish_their_port_and_check_a_path_served_without_a_token() -> None:
    from broker.api.app import create_app  # noqa: PLC0415

    apis = {name: spec for name, spec in exchange_services().items() if command(spec)[:2] == ["api", "serve"]}
    assert set(apis) == {"api-tj", "api-ru"}
    for name, spec in apis.items():
        settings = settings_of(spec)
        assert settings.api_address == "0.0.0.0", f"{name} is not reachable from outside its container"
        published = [str(port).rsplit(":", 1)[-1] for port in spec.get("ports", [])]
        assert str(settings.api_port) in published, f"{name} does not publish its port"
        probe = spec["healthcheck"]["test"][3]
        url = re.search(r"http://127\.0\.0\.1:(\d+)(/\S+?)'", probe)
        assert url is not None, probe
        assert int(url.group(1)) == settings.api_port, f"{name} probes another port"
        assert asyncio.run(_status_without_token(create_app(None), url.group(2))) == 200, name


async def _status_without_token(application: Any, path: str) -> int:
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        return (await client.get(path)).status_code


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
        entrypoint, service, args = split_run(words)
        assert service in found, f"README runs {service}, which docker-compose.yml does not have"
        if entrypoint is None:
            parse(args)
            runs += 1
    assert runs >= 10
