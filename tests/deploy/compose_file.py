"""What the compose file and the tests of it share: the files read as compose reads them, mounts,
the services' commands parsed by the real CLI and the settings they build from their environment."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import typer
import yaml
from typer.main import get_command

from broker.cli.app import app
from broker.state.rabbitmq_passwords import PASSWORD_ENV_PREFIX
from broker.state.settings import ExchangeSettings
from broker.state.subscriber_kit import SETTINGS_FILE as KIT_SETTINGS

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


@contextlib.contextmanager
def service_environment(spec: dict[str, Any]) -> Iterator[None]:
    """os.environ as the service's container has it, as far as `broker` reads it."""
    environment = {key: str(value) for key, value in (spec.get("environment") or {}).items()}
    saved = dict(os.environ)
    try:
        for key in list(os.environ):
            if key.startswith(("EXCHANGE_", PASSWORD_ENV_PREFIX, "RABBITMQ_ADMIN_")):
                del os.environ[key]
        os.environ.update(environment)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def host_path(spec: dict[str, Any], inside: PurePosixPath, volumes: dict[str, Path]) -> Path:
    """Where a path of the service's container is in the volumes the tests filled."""
    mount = mount_of(spec, inside)
    assert mount is not None, f"{inside} is in no mount"
    source = volumes[mount.source] if mount.named else ROOT / mount.source
    return source / inside.relative_to(mount.target).as_posix()


def settings_of(spec: dict[str, Any], volumes: dict[str, Path] | None = None) -> ExchangeSettings:
    """The settings the service's `broker` builds: from its environment, over its kit's settings
    file when it runs from a kit (read from `volumes`, paths as the container sees them)."""
    args = command(spec)
    with service_environment(spec):
        if "--kit" not in args:
            return ExchangeSettings.load(None)
        assert volumes is not None, "a kit's settings are read from its volume"
        kit = PurePosixPath(args[args.index("--kit") + 1])
        text = (host_path(spec, kit, volumes) / KIT_SETTINGS).read_text("utf-8")
        return ExchangeSettings.load(
            None, **ExchangeSettings.file_values(text, folder=Path(kit), source="kit")
        )


def exchange_services() -> dict[str, dict[str, Any]]:
    """Services whose command reads the exchange settings: gateway, api, subscribe."""
    return {
        name: spec
        for name, spec in services().items()
        if runs_broker(spec) and command(spec)[:1] in (["gateway"], ["api"], ["subscribe"])
    }


def subscriber_user_of(spec: dict[str, Any], volumes: dict[str, Path]) -> str:
    """The RabbitMQ user a subscriber logs in as: its own, no gateway's, ministry's or link's."""
    settings = settings_of(spec, volumes)
    user = settings.amqp_url.split("//", 1)[1].split("@", 1)[0]
    assert user.startswith(f"{settings.country.lower()}-sub-"), (
        f"a subscriber logs in as its own user, not {user}"
    )
    return user


def options(args: list[str], option: str) -> list[str]:
    return [args[i + 1] for i, word in enumerate(args) if word == option]


def readme_compose_lines(subsection: str | None = None) -> list[list[str]]:
    """Every `docker compose ...` command of README's Deployment section (or of one `### ` part of
    it), as words after `docker compose`, in order."""
    text = (ROOT / "README.md").read_text("utf-8")
    section = text[text.index("## Deployment") :]
    section = section[: section.index("\n## ", 1)]
    if subsection is not None:
        section = section[section.index(f"### {subsection}") :]
        end = section.find("\n### ", 1)
        section = section if end < 0 else section[:end]
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


def split_run(words: list[str]) -> tuple[str | None, str, list[str]]:
    """`run [--rm] [--entrypoint E] SERVICE ARGS...` as (E, SERVICE, ARGS)."""
    assert words[0] == "run"
    at, entrypoint = 1, None
    while words[at].startswith("-"):
        if words[at] == "--entrypoint":
            entrypoint = words[at + 1]
            at += 1
        at += 1
    return entrypoint, words[at], words[at + 1 :]
