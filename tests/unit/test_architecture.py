"""The layout rules of docs/ARCHITECTURE.md, checked on the source: size, cycles, and who imports whom.

Only module-level imports count: an import inside a function (a lazy opener, an optional extra) runs
when it is called, and one under ``if TYPE_CHECKING:`` never runs, so neither can form an import-time
cycle or drag a layer in on import.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import Final, TypeGuard

import pytest

# Found without importing it, so a cycle is reported by the check below rather than as an ImportError.
_SPEC: Final = importlib.util.find_spec("promptcache")
assert _SPEC is not None
assert _SPEC.origin is not None
PACKAGE_DIR: Final = Path(_SPEC.origin).resolve().parent
MAX_LINES: Final = 450

# Modules allowed over MAX_LINES, each with the reason. Keep it empty: split a module instead.
LONG_MODULE_ALLOW_LIST: Final[dict[str, str]] = {}

# What the engine may never import: everything that sits on top of it.
UPPER_LAYERS: Final = (
    "promptcache.cli",
    "promptcache.demo",
    "promptcache.pytest_plugin",
    "promptcache.integrations",
)
CONCRETE_BACKENDS: Final = (
    "promptcache.backends.redis",
    "promptcache.backends.cluster",
    "promptcache.backends.sqlite",
    "promptcache.backends.memory",
)
# Modules outside backends/ that may import a concrete backend at module level, each with the reason.
# Empty: _stores.py's openers import theirs inside the opener, which this check never sees.
CONCRETE_BACKEND_ALLOW_LIST: Final[dict[str, str]] = {}


def module_name(path: Path) -> str:
    """The dotted name of a source file under the package directory."""
    parts = [PACKAGE_DIR.name, *path.relative_to(PACKAGE_DIR).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: Final = {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def is_type_checking_block(node: ast.stmt) -> TypeGuard[ast.If]:
    """True for ``if TYPE_CHECKING:`` and ``if typing.TYPE_CHECKING:``."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def module_level_imports(statements: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """Import statements that run on import: not in functions, classes or TYPE_CHECKING blocks."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in statements:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif is_type_checking_block(node):
            found.extend(module_level_imports(node.orelse))
        elif isinstance(node, ast.If | ast.Try | ast.With):
            for block in ("body", "orelse", "finalbody"):
                found.extend(module_level_imports(getattr(node, block, [])))
            for handler in getattr(node, "handlers", []):
                found.extend(module_level_imports(handler.body))
    return found


def resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names, relative imports included."""
    if not node.level:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imported_modules(module: str) -> set[str]:
    """The promptcache modules ``module`` imports at module level (a submodule when one is named)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    targets: set[str] = set()
    for node in module_level_imports(tree.body):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        base = resolve(module, node)
        for alias in node.names:
            # `from promptcache.backends import redis` imports the submodule, not just the package.
            sub = f"{base}.{alias.name}"
            targets.add(sub if sub in MODULES else base)
    return {t for t in targets if t in MODULES and t != module}


GRAPH: Final = {m: imported_modules(m) for m in MODULES}


def within(module: str, package: str) -> bool:
    """True if ``module`` is ``package`` or inside it."""
    return module == package or module.startswith(package + ".")


def is_engine(module: str) -> bool:
    """The engine: the private top-level modules (``promptcache._x``) and every store module."""
    top = module.split(".")
    return (len(top) == 2 and top[1].startswith("_")) or within(module, "promptcache.backends")


def test_the_graph_sees_the_package() -> None:
    """The walk finds the modules and edges it checks (a broken walk would pass every rule below)."""
    assert {"promptcache._keys", "promptcache._canonical", "promptcache.backends.redis"} <= MODULES.keys()
    assert "promptcache._canonical" in GRAPH["promptcache._keys"]
    assert is_engine("promptcache._cache")
    assert is_engine("promptcache.backends._base")
    assert not is_engine("promptcache.metrics")


def test_no_module_is_too_long() -> None:
    """No module is over MAX_LINES lines unless the allow-list says why."""
    lines = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in MODULES.items()}
    too_long = sorted(
        f"{m} ({n} lines)" for m, n in lines.items() if n > MAX_LINES and m not in LONG_MODULE_ALLOW_LIST
    )
    assert not too_long, f"modules over {MAX_LINES} lines (split them): {too_long}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None."""
    done: set[str] = set()
    for root in sorted(graph):
        if root in done:
            continue
        path: list[str] = [root]
        on_path = {root}
        stack = [iter(sorted(graph[root]))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                continue
            if nxt in on_path:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in done:
                path.append(nxt)
                on_path.add(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_no_import_cycle() -> None:
    """Module-level imports form no cycle."""
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("layer", UPPER_LAYERS)
def test_engine_never_imports_upward(layer: str) -> None:
    """No engine module imports the CLI, the demo, the pytest plugin or the SDK integrations."""
    edges = sorted(f"{m} -> {t}" for m in GRAPH if is_engine(m) for t in GRAPH[m] if within(t, layer))
    assert not edges, f"the engine imports {layer}: {edges}"


def test_concrete_backends_only_through_protocols() -> None:
    """Outside backends/, no module imports a concrete store at module level (open_store does, lazily)."""
    edges = sorted(
        f"{m} -> {t}"
        for m in GRAPH
        if not within(m, "promptcache.backends") and m not in CONCRETE_BACKEND_ALLOW_LIST
        for t in GRAPH[m]
        if t in CONCRETE_BACKENDS
    )
    assert not edges, (
        f"concrete backend imported outside backends/ (use promptcache.backends' Protocols): {edges}"
    )


def test_every_module_is_in_the_architecture_doc() -> None:
    """docs/ARCHITECTURE.md has a line for every module of the package."""
    doc = Path(__file__).resolve().parents[2] / "docs" / "ARCHITECTURE.md"
    if not doc.is_file():
        pytest.skip("docs/ARCHITECTURE.md is not beside these tests (an installed-wheel run)")
    text = doc.read_text(encoding="utf-8")
    missing = sorted(
        m for m, p in MODULES.items() if f"`{p.relative_to(PACKAGE_DIR).as_posix()}`" not in text
    )
    assert not missing, f"modules without a line in docs/ARCHITECTURE.md: {missing}"
