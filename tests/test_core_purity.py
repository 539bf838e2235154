"""The trusted core does no I/O: importing it must not load a broker client, asyncio or a database.

Checked in a fresh interpreter, because this test process has long since imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

CORE_MODULES = (
    "broker.canonical",
    "broker.jws",
    "broker.envelope",
    "broker.sealing",
    "broker.agreement",
    "broker.catalogue",
    "broker.pki",
    "broker.trust",
    "broker.audit.merkle",
    "broker.audit.entry",
    "broker.witnessing",
    "broker.audit.archive",
    "broker.audit.bounded",
    "broker.tls_policy",
)
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
