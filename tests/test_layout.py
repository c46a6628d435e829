"""The house's walls and sizes (STYLE.md, issue 13), read from the source: who imports whom."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "cachelayer"
MAX_LINES = 460  # "no module over about 450 lines" (issue 13)


def _modules() -> Dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, *, load_time_only: bool) -> Iterator[str]:
    """The modules ``module`` imports: every import, or (``load_time_only``) those run when it
    is imported (module level, not under ``TYPE_CHECKING``, not inside a function)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def walk(nodes: List[ast.stmt]) -> Iterator[ast.stmt]:
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield node
            elif isinstance(node, ast.If):
                if not (load_time_only and _is_type_checking(node)):
                    yield from walk(node.body)
                yield from walk(node.orelse)
            elif isinstance(node, (ast.Try,)):
                for block in (node.body, node.orelse, node.finalbody):
                    yield from walk(block)
                for handler in node.handlers:
                    yield from walk(handler.body)
            elif (
                isinstance(node, (ast.With,))
                or (
                    not load_time_only
                    and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                )
                or (load_time_only and isinstance(node, ast.ClassDef))
            ):
                yield from walk(node.body)

    for node in walk(tree.body):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target
            for alias in node.names:
                if f"{target}.{alias.name}" in MODULES:
                    yield f"{target}.{alias.name}"


def _graph() -> Dict[str, Set[str]]:
    graph: Dict[str, Set[str]] = {}
    for module in MODULES:
        deps = set()
        own_parents = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
        for target in _imports(module, load_time_only=True):
            # Importing a.b.c runs a and a.b first; the importer's own parent packages are
            # already loaded (Python loads them before it), so only a named one counts.
            parts = target.split(".")
            implied = {".".join(parts[:i]) for i in range(1, len(parts))} - own_parents
            deps.update(implied | {target})
        graph[module] = {d for d in deps if d in MODULES and d != module}
    return graph


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _importers(prefix: str, *, load_time_only: bool = False) -> Iterator[Tuple[str, str]]:
    for module in MODULES:
        if module == prefix or module.startswith(prefix + "."):
            for target in _imports(module, load_time_only=load_time_only):
                yield module, target


def _under(target: str, *prefixes: str) -> bool:
    return any(target == p or target.startswith(p + ".") for p in prefixes)


class TestWalls:
    def test_no_import_circle(self) -> None:
        """No two modules import each other, directly or round a loop, when they are loaded
        (an import inside a function, run later, is no circle)."""
        assert _cycles(_graph()) == []

    def test_the_core_knows_no_http_and_no_provider(self) -> None:
        """core/ never imports server/ or providers/ (it finds providers by entry point)."""
        crossing = [
            (m, t)
            for m, t in _importers("cachelayer.core")
            if _under(t, "cachelayer.server", "cachelayer.providers")
        ]
        assert crossing == []

    def test_providers_use_the_public_face_only(self) -> None:
        """providers/ import ``cachelayer`` and its public modules, as a third party would:
        never the core's or the server's internals."""
        crossing = [
            (m, t)
            for m, t in _importers("cachelayer.providers")
            if _under(t, "cachelayer.core", "cachelayer.server", "cachelayer.local")
        ]
        assert crossing == []

    def test_the_server_never_imports_boto3(self) -> None:
        """server/ reaches AWS only through the cache and the providers."""
        crossing = [
            (m, t) for m, t in _importers("cachelayer.server") if _under(t, "boto3", "botocore")
        ]
        assert crossing == []

    def test_the_emulator_does_not_import_the_extension(self) -> None:
        """local/ drives the extension as a process over the Lambda APIs."""
        crossing = [
            (m, t)
            for m, t in _importers("cachelayer.local")
            if _under(t, "cachelayer.extension", "cachelayer.core", "cachelayer.server")
        ]
        assert crossing == []


class TestSizes:
    @pytest.mark.parametrize(
        "module", sorted(m for m in MODULES if not m.startswith("cachelayer.testing"))
    )
    def test_no_module_over_the_limit(self, module: str) -> None:
        """Each module stays at about 450 lines or under: a bigger one does more than one job."""
        lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
        assert lines <= MAX_LINES, f"{MODULES[module].relative_to(SRC)}: {lines} lines"


class TestProvidersByName:
    NAMES = re.compile(r"\b(ssm|secretsmanager|secrets manager|parameter store)\b", re.IGNORECASE)

    def test_the_server_and_the_core_name_no_aws_service(self) -> None:
        """Only providers/ know which AWS service answers which route: the server dispatches to
        whichever provider declares the capability."""
        named = []
        for module, path in MODULES.items():
            if not _under(module, "cachelayer.server", "cachelayer.core"):
                continue
            text = path.read_text(encoding="utf-8")
            named += [(module, m.group(0)) for m in self.NAMES.finditer(text)]
        assert named == []
