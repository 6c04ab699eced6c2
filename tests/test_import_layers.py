"""No import cycles in the avlegrad package: the modules' imports form a directed acyclic graph,
the top-level ones (run when a module is imported) and, with them, the deferred ones (inside
functions): a lower layer importing a higher one from inside a function is a cycle of layers too,
merely postponed. (Imports by name through ``importlib``, the registries' built-in modules, are
not seen here.)"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "avlegrad"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path, modules: set[str], deferred: bool = False) -> set[str]:
    """The avlegrad modules ``path`` imports at module level (also inside if/try at top level);
    with ``deferred``, also those it imports inside functions and classes (``if TYPE_CHECKING:``
    blocks, never run, are left out)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.split(".")[0] == "avlegrad")
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != "avlegrad":
                    continue
                for alias in node.names:  # "from . import x" imports the submodule x
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in modules else target)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            elif isinstance(node, (ast.If, ast.Try)) or (deferred and hasattr(node, "body")):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                visit(getattr(node, "finalbody", []))
            elif deferred:  # statements holding blocks (with, for, match, ...) and nested expressions
                visit([child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)])

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    # importing a.b.c runs a/__init__ and a/b/__init__ first: parents count as imported
    closed = set()
    for target in found:
        parts = target.split(".")
        closed.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {m for m in closed if m in modules and m != name and not name.startswith(m + ".")}


def find_cycle(graph: dict[str, set[str]]):
    state, stack = {}, []

    def dfs(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = dfs(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = dfs(node)
            if cycle:
                return cycle
    return None


def test_the_package_has_no_import_cycles():
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    graph = {module_name(p): top_level_imports(p, modules) for p in paths}
    assert graph["avlegrad.data.segmentation"] >= {"avlegrad.data.base"}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_deferred_imports_make_no_cycle_either():
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    graph = {module_name(p): top_level_imports(p, modules, deferred=True) for p in paths}
    assert "avlegrad.faithfulness" in graph["avlegrad.eval.run"]  # (imported inside _evaluate)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle through a deferred import: " + " -> ".join(cycle)


def test_deferred_imports_are_found(tmp_path):
    package = tmp_path / "avlegrad"
    package.mkdir()
    source = package / "low.py"
    source.write_text("import os\n"
                      "def f():\n    from .high import x\n"
                      "class C:\n    def g(self):\n        with open('x'):\n            import avlegrad.other\n"
                      "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import typing_only\n")
    modules = {"avlegrad", "avlegrad.low", "avlegrad.high", "avlegrad.other", "avlegrad.typing_only"}
    import test_import_layers as layers

    old = layers.PACKAGE
    layers.PACKAGE = package
    try:
        assert top_level_imports(source, modules) == set()
        assert top_level_imports(source, modules, deferred=True) == {"avlegrad.high", "avlegrad.other"}
    finally:
        layers.PACKAGE = old


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
