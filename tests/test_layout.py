"""The package's shape: no import cycle between mtl_bench modules, and no module over 500 lines."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Installed as mtl_bench.models and mtl_bench.tasks (setup.cfg's package_dir).
PACKAGE_DIRS = {"mtl_bench": ROOT / "mtl_bench", "mtl_bench.models": ROOT / "models", "mtl_bench.tasks": ROOT / "tasks"}
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    modules = {}
    for package, directory in PACKAGE_DIRS.items():
        for path in sorted(directory.rglob("*.py")):
            parts = list(path.relative_to(directory).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The mtl_bench modules ``name`` imports, at module level or inside functions (not under TYPE_CHECKING)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str) -> None:
        while target and target not in modules:  # ``import mtl_bench.a.b.Name`` forms never occur; strip to a module
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:  # the else branch runs
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # ``from pkg import sub`` imports the submodule ``pkg.sub``; ``from pkg import Name`` imports ``pkg``.
                add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return {m for m in found if m.startswith("mtl_bench")}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` as a path ``[a, b, ..., a]``, or ``[]``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def walk(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = walk(nxt)
                if found:
                    return found
        state[node] = 2
        path.pop()
        return []

    for start in sorted(graph):
        if start not in state:
            found = walk(start)
            if found:
                return found
    return []


def test_cycle_finder_finds_a_planted_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_imports_resolve_submodules_relative_forms_and_type_checking(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from mtl_bench.experiments import grid\n"
        "from mtl_bench.experiments import EXPERIMENTS\n"
        "from . import io\n"
        "if TYPE_CHECKING:\n    from mtl_bench import config\n"
        "def f():\n    import mtl_bench.analysis.summary\n"
    )
    modules = dict.fromkeys(["mtl_bench", "mtl_bench.io", "mtl_bench.config", "mtl_bench.experiments",
                             "mtl_bench.experiments.grid", "mtl_bench.analysis", "mtl_bench.analysis.summary",
                             "mtl_bench.x"], source)
    assert _imports("mtl_bench.x", source, modules) == {
        "mtl_bench.experiments.grid", "mtl_bench.experiments", "mtl_bench.io", "mtl_bench.analysis.summary"}


def test_no_import_cycle():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert graph["mtl_bench.experiments.grid"], "the walk must see the grid's imports"
    cycle = _cycle(graph)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_no_module_over_the_line_limit():
    sizes = {f"{package}/{p.relative_to(directory)}": len(p.read_text().splitlines())
             for package, directory in PACKAGE_DIRS.items() for p in directory.rglob("*.py")}
    too_big = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not too_big, f"modules over {MAX_LINES} lines: {too_big}"


def test_analysis_and_the_command_line_start_without_tensorflow():
    """Reading a run's CSVs and answering --help or a bad flag never pays TensorFlow's 10-20 s start-up."""
    import subprocess
    import sys

    modules = [name for name in _modules() if name.startswith("mtl_bench.analysis")]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules) + "import mtl_bench.cli, mtl_bench.config, "
            "mtl_bench.experiments, mtl_bench.remedies, mtl_bench.measures.catalog\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, sorted(sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1500:]
    assert len(modules) >= 8
