"""The named volumes as README's "First start" fills them, shared by the compose tests."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from broker.cli.app import main as broker_main
from broker.state.keystore import KeyStore
from tests.deploy.compose_file import (
    TOOLS_PROFILE,
    mounts,
    named_volumes,
    readme_compose_lines,
    service_environment,
    services,
    split_run,
)


@pytest.fixture(scope="session")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The named volumes filled by README's "First start" run as written, each `docker compose run`
    in a folder standing for its container: its working_dir, with its mounts linked in."""
    root = tmp_path_factory.mktemp("compose")
    made = {name: root / "volumes" / name for name in named_volumes()}
    for path in made.values():
        path.mkdir(parents=True)
    assert run_tool_lines("First start", root, made) >= 7
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
        with contextlib.chdir(container), service_environment(spec):
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
