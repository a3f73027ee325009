"""One-way layers: read every import of the four packages (without importing them) and check them.

The layers, bottom up (see ARCHITECTURE.md / design notes):

1. ``distortions``: pure, imports nothing of ours outside itself;
2. the core ``bapps_build`` (all but its command-line modules): imports only ``distortions``;
3. ``generators`` and ``judgments``: the core and ``distortions``, not each other;
4. the command-line modules: anything.

Imports inside functions count, since they are how back doors hide; so do ``from . import x``
forms. ``from pkg import name`` is an import of ``pkg.name`` when that is a module, else of
``pkg``. Importing ``pkg.sub`` is counted as an import of ``pkg.sub`` only (not of ``pkg``'s
``__init__``), so a package that re-exports its submodules is not a cycle by itself; a
submodule that imports names from its own package's ``__init__`` is.
"""
from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("distortions", "bapps_build", "generators", "judgments")
CLI_MODULES = frozenset({"bapps_build.cli", "bapps_build.calibration_cli", "generators.cli",
                         "judgments.cli"})
# the third layer's packages may not import each other
SIBLINGS = frozenset({"generators", "judgments"})


@dataclass(frozen=True)
class Import:
    source: str   # importing module
    target: str   # imported module (one of ours)
    path: str     # file of the importing module, relative to the repository
    line: int
    text: str     # the import statement as written

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.source} -> {self.target}  ({self.text})"


def module_files(root: Path = ROOT) -> Dict[str, Path]:
    """Every module of the four packages, by dotted name (a package's ``__init__`` by its name)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _base_of(module: str, is_package: bool, node: ast.ImportFrom) -> Optional[str]:
    """The absolute module a ``from ... import`` names (``None`` if it climbs out of the tree)."""
    if not node.level:
        return node.module
    parts = module.split(".") if is_package else module.split(".")[:-1]
    climb = node.level - 1
    if climb > len(parts) - 1:
        return None
    parts = parts[:len(parts) - climb]
    return ".".join(parts + ([node.module] if node.module else []))


def _targets(node: ast.AST, module: str, is_package: bool, known) -> List[str]:
    if isinstance(node, ast.Import):
        out = []
        for alias in node.names:
            # `import a.b.c` runs a.b.c; count the deepest of ours it names
            parts = alias.name.split(".")
            names = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
            out += [next(name for name in names if name in known)] if any(
                name in known for name in names) else []
        return out
    base = _base_of(module, is_package, node)
    if base is None:
        return []
    out = []
    for alias in node.names:
        if f"{base}.{alias.name}" in known:
            out.append(f"{base}.{alias.name}")
        elif base in known:
            out.append(base)
    return out


@functools.lru_cache(maxsize=None)
def collect_imports(root: Path = ROOT) -> Tuple[Import, ...]:
    """Every import between modules of ours, at module level or inside functions and classes."""
    files = module_files(root)
    imports = []
    for module, path in files.items():
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            text = ast.get_source_segment(source, node) or ""
            for target in dict.fromkeys(_targets(node, module, is_package, files)):
                if target != module:
                    imports.append(Import(module, target, str(path.relative_to(root)), node.lineno,
                                          " ".join(text.split())))
    return tuple(imports)


def find_cycles(imports: Sequence[Import]) -> List[List[Import]]:
    """One cycle (as the chain of imports that closes it) per strongly connected group.

    A group may hold more cycles than the one shown; its members are all named in the report.
    """
    graph: Dict[str, Dict[str, Import]] = {}
    for imp in imports:
        graph.setdefault(imp.source, {}).setdefault(imp.target, imp)
    cycles, seen = [], set()
    for group in _strong_components(graph):
        if len(group) < 2 or group & seen:
            continue
        seen |= group
        cycles.append(_cycle_within(graph, group))
    return cycles


def _strong_components(graph: Dict[str, Dict[str, Import]]) -> List[set]:
    """Tarjan's algorithm, iterative (the graph is small, but recursion limits are not ours)."""
    index, low, on_stack, stack, groups = {}, {}, set(), [], []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, {}))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                groups.append(group)
    return groups


def _cycle_within(graph: Dict[str, Dict[str, Import]], group: set) -> List[Import]:
    """A shortest cycle through the group's first module (breadth-first back to itself)."""
    start = min(group)
    paths = {start: []}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child, imp in sorted(graph.get(node, {}).items()):
                if child == start:
                    return paths[node] + [imp]
                if child in group and child not in paths:
                    paths[child] = paths[node] + [imp]
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start} in its own strongly connected group")


def _group_of(cycle: List[Import], imports: Sequence[Import]) -> set:
    graph: Dict[str, Dict[str, Import]] = {}
    for imp in imports:
        graph.setdefault(imp.source, {})[imp.target] = imp
    return next(group for group in _strong_components(graph) if cycle[0].source in group)


def layer_of(module: str) -> int:
    if module in CLI_MODULES:
        return 4
    return {"distortions": 1, "bapps_build": 2}.get(module.split(".")[0], 3)


def layer_violations(imports: Sequence[Import]) -> List[str]:
    bad = []
    for imp in imports:
        source_package, target_package = imp.source.split(".")[0], imp.target.split(".")[0]
        if layer_of(imp.target) > layer_of(imp.source):
            bad.append(f"{imp}: layer {layer_of(imp.source)} imports layer {layer_of(imp.target)}")
        elif (layer_of(imp.source) == 3 and {source_package, target_package} == SIBLINGS):
            bad.append(f"{imp}: generators and judgments do not import each other")
    return bad


def test_the_reader_sees_imports_inside_functions_and_relative_forms(tmp_path):
    """The checker itself: a back door inside a function and a `from . import` cycle are seen."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "bapps_build" / "export.py").write_text(
        "def counts():\n    from judgments.store import read\n")
    (tmp_path / "judgments" / "store.py").write_text("from bapps_build import export\n")
    (tmp_path / "distortions" / "a.py").write_text("from . import b\n")
    (tmp_path / "distortions" / "b.py").write_text("from .a import x\nfrom .. import y\n")
    imports = collect_imports(tmp_path)
    pairs = {(imp.source, imp.target) for imp in imports}
    assert ("bapps_build.export", "judgments.store") in pairs
    assert ("judgments.store", "bapps_build.export") in pairs
    assert {("distortions.a", "distortions.b"), ("distortions.b", "distortions.a")} <= pairs
    cycles = [sorted({imp.source for imp in cycle}) for cycle in find_cycles(imports)]
    assert sorted(cycles) == [["bapps_build.export", "judgments.store"],
                              ["distortions.a", "distortions.b"]]
    assert [v for v in layer_violations(imports) if "layer 2 imports layer 3" in v]


def test_the_packages_are_read():
    imports = collect_imports()
    assert len(module_files()) > 50
    assert any(imp.source == "bapps_build.cli" for imp in imports)


def test_no_import_cycle_between_modules():
    imports = collect_imports()
    cycles = find_cycles(imports)
    report = "\n\n".join(
        f"cycle in the group {sorted(_group_of(cycle, imports))}:\n  "
        + "\n  ".join(str(imp) for imp in cycle) for cycle in cycles)
    if cycles:
        pytest.fail(f"{len(cycles)} import cycle(s), imports inside functions included:\n\n{report}")


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_the_layers_below_it(package):
    bad = [v for v in layer_violations(collect_imports()) if v.split(":")[0].startswith(package + "/")]
    if bad:
        pytest.fail("imports against the layers:\n" + "\n".join(bad))


def test_the_core_runs_without_the_packages_above_it():
    """At run time too: importing every core module loads neither generators nor judgments, and
    importing those packages registers their hooks with the core."""
    import subprocess
    import sys

    core = sorted(m for m in module_files() if layer_of(m) == 2)
    script = "\n".join([
        "import importlib, sys",
        *[f"importlib.import_module({m!r})" for m in core],
        "above = sorted(m for m in sys.modules if m.split('.')[0] in ('generators', 'judgments'))",
        "assert not above, above",
        "from bapps_build import hooks",
        "assert hooks.shard_fields() == [] and hooks.replay_preparers() == []",
        "import judgments, generators",
        "assert [f.key for f in hooks.shard_fields()] == ['counts']",
        "assert len(hooks.replay_preparers()) == 1",
    ])
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
