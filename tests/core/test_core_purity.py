"""The trusted core does no I/O: importing it must not load a broker client, asyncio or a database.

Checked in a fresh interpreter, because this test process has long since imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _modules_of(package: str, *, skip: str | None = None) -> tuple[str, ...]:
    """Every module of `package` (found on disk, so a new module is covered without editing this test)."""
    root = REPO.joinpath(*package.split("."))
    names = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if skip is None or not name.startswith(skip):
            names.append(name)
    return tuple(names)


# The whole core, and the audit log's pure part (its stores are the I/O edge).
CORE_MODULES = _modules_of("broker.core") + _modules_of("broker.audit", skip="broker.audit.stores")
FORBIDDEN = ("aio_pika", "aiormq", "asyncio", "sqlite3", "asyncpg")

_PROBE = """
import importlib, json, sys
for name in sys.argv[2:]:
    importlib.import_module(name)
forbidden = json.loads(sys.argv[1])
print(json.dumps(sorted(name for name in forbidden if name in sys.modules)))
"""


def _loaded_forbidden(modules: tuple[str, ...]) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(FORBIDDEN), *modules],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout)
    return loaded


def test_core_modules_load_no_transport_asyncio_or_database() -> None:
    assert _loaded_forbidden(CORE_MODULES) == []


def test_the_probe_sees_a_forbidden_import() -> None:
    # Control: the same probe must notice when one of them is loaded.
    assert _loaded_forbidden((*CORE_MODULES, "sqlite3")) == ["sqlite3"]


def test_the_core_list_is_found_on_disk() -> None:
    # Control: the list above is read from the tree, so it holds the modules the design names.
    for module in (
        "broker.core.sealing",
        "broker.core.catalogue",
        "broker.core.catalogue.death",
        "broker.audit.merkle",
    ):
        assert module in CORE_MODULES
    assert not [name for name in CORE_MODULES if name.startswith("broker.audit.stores")]
