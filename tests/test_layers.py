"""Imports run one way: command line (and the HTTP API) → exchange → audit log and local state → core.

Every import statement in `broker/` and `adapters/` (at module level, inside functions, under
TYPE_CHECKING) is read from the source and checked against the layer table below.
"""

from __future__ import annotations

import ast
import pickle
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Layer of a module: the longest prefix in this table names it.
LAYERS = {
    "broker.core": "core",
    "broker.audit": "audit",
    "broker.audit.stores": "audit.stores",
    "broker.state": "state",
    "broker.exchange": "exchange",
    "broker.api": "api",
    "broker.cli": "cli",
    "adapters": "adapters",
}
# What each layer may import (besides the standard library and third-party packages).
ALLOWED = {
    "core": {"core"},
    "audit": {"audit", "core"},
    "audit.stores": {"audit.stores", "audit", "state", "core"},  # stores share the private-file helper
    "state": {"state", "core"},
    "adapters": {"adapters", "state", "core"},  # national formats: files on the ministry side
    "exchange": {"exchange", "audit.stores", "audit", "state", "core"},
    "api": {"api", "exchange", "audit.stores", "audit", "state", "core"},  # HTTP beside the command line
    "cli": {"cli", "api", "exchange", "audit.stores", "audit", "state", "core", "adapters"},
}


def layer_of(module: str) -> str | None:
    matches = [prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")]
    return LAYERS[max(matches, key=len)] if matches else None


def parse(source: str) -> ast.Module:
    try:
        return ast.parse(source)
    except SystemError:
        # CPython 3.11.7's AST conversion can lose count of its recursion depth after a long test run
        # in one process ("AST constructor recursion depth mismatch", fixed in 3.11.8): parse in a
        # fresh interpreter and take the tree back pickled.
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                "import ast, pickle, sys; sys.stdout.buffer.write(pickle.dumps(ast.parse(sys.stdin.read())))",
            ],
            input=source.encode(),
            capture_output=True,
            check=True,
        )
        tree = pickle.loads(child.stdout)  # our own child, from our own source
        assert isinstance(tree, ast.Module)
        return tree


def imported_modules(source: str) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # `from broker import cli` names a module through the package
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def upward_imports(module: str, source: str) -> list[str]:
    own = layer_of(module)
    assert own is not None, module
    wrong = []
    for line, name in imported_modules(source):
        target = layer_of(name)
        if target is not None and target not in ALLOWED[own]:
            wrong.append(f"{module}:{line} ({own}) imports {name} ({target})")
    return wrong


def project_modules() -> dict[str, Path]:
    modules = {}
    for top in ("broker", "adapters"):
        for path in sorted((REPO / top).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def test_every_module_belongs_to_a_layer() -> None:
    modules = project_modules()
    unplaced = [name for name in modules if name != "broker" and layer_of(name) is None]
    assert unplaced == []
    assert len(modules) > 80  # the whole tree was read, not an empty glob


def test_imports_only_run_downward() -> None:
    wrong = [
        problem
        for name, path in project_modules().items()
        if name != "broker"
        for problem in upward_imports(name, path.read_text(encoding="utf-8"))
    ]
    assert wrong == []


def test_the_check_catches_an_upward_import() -> None:
    # Control: the same check must refuse each direction the design forbids.
    assert upward_imports("broker.core.sealing", "from broker.exchange.transport import RabbitTransport\n")
    assert upward_imports("broker.state.outbox", "import broker.audit.entry\n")
    assert upward_imports("broker.audit.verify", "from broker.audit.stores import AuditStore\n")
    assert upward_imports("broker.exchange.gateway", "def f():\n    from broker.cli import app\n")
    assert upward_imports("broker.exchange.gateway", "from broker import cli\n")
    assert upward_imports("adapters.ru.parse", "from broker.exchange.transport import RabbitTransport\n")
    assert not upward_imports("broker.cli.gateway", "from broker.exchange.gateway import Gateway\n")
