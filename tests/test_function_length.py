"""No function over 60 lines in the packages: read from the source, nothing imported.

A function's length is `end_lineno - lineno + 1` of its ast node: from `def` to its last line,
decorators not counted, nested functions counted in their parent and on their own.
"""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("bapps_build", "distortions", "generators", "judgments")
MAX_LINES = 60


def long_functions(root: Path = REPO, limit: int = MAX_LINES):
    """(file, line, name, length) of every function longer than `limit` lines."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = node.end_lineno - node.lineno + 1
                    if length > limit:
                        found.append((path.relative_to(root).as_posix(), node.lineno, node.name, length))
    return sorted(found)


def test_the_packages_are_found():
    for package in PACKAGES:
        assert (REPO / package / "__init__.py").is_file(), package


def test_the_measure_counts_from_def_to_the_last_line(tmp_path):
    package = tmp_path / "bapps_build"
    package.mkdir()
    body = "".join(f"    x{i} = {i}\n" for i in range(60))  # def + 60 lines: 61
    (package / "m.py").write_text("@decorator\ndef long():\n" + body + "\n\ndef short():\n    return 1\n")
    assert long_functions(tmp_path) == [("bapps_build/m.py", 2, "long", 61)]
    assert long_functions(tmp_path, limit=61) == []


def test_no_function_over_60_lines():
    found = long_functions()
    assert not found, f"{len(found)} function(s) over {MAX_LINES} lines:\n" + "\n".join(
        f"  {path}:{line} {name} ({length} lines)" for path, line, name, length in found)
