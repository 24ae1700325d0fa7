"""How opslib's modules depend on each other: no import loops, libvirt only through virt.

Every import counts, wherever it stands: at module level, inside a function (a lazy
import still ties the two modules together), under ``TYPE_CHECKING``, and
``importlib.import_module("opslib.…")`` with a literal name.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import opslib

PACKAGE = Path(opslib.__file__).resolve().parent


def module_files() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imported_names(module: str, path: Path) -> list[tuple[str, int]]:
    """Every module name ``module`` imports (absolute, as written or resolved from a
    relative import), with the line it is imported on."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from opslib import records` imports the module opslib.records
            found += [(base, node.lineno)]
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.args[0].value, node.lineno))
    return found


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {opslib module it imports: line of the first such import}."""
    files = module_files()
    graph: dict[str, dict[str, int]] = {m: {} for m in files}
    for module, path in files.items():
        for name, line in imported_names(module, path):
            if name in files and name != module:
                graph[module].setdefault(name, line)
    return graph


def loops(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One shortest loop through each module that can reach itself, without repeats."""
    found: list[list[str]] = []
    covered: set[str] = set()
    for start in sorted(graph):
        if start in covered:
            continue
        # breadth-first from start: the first path back to start is a shortest loop
        paths, seen = [[start]], {start}
        loop = None
        while paths and loop is None:
            longer = []
            for path in paths:
                for nxt in sorted(graph[path[-1]]):
                    if nxt == start:
                        loop = [*path, start]
                        break
                    if nxt not in seen:
                        seen.add(nxt)
                        longer.append([*path, nxt])
                if loop:
                    break
            paths = longer
        if loop:
            found.append(loop)
            covered.update(loop)
    return found


def describe(loop: list[str], graph: dict[str, dict[str, int]]) -> str:
    steps = [f"{a} -> {b} (line {graph[a][b]})" for a, b in itertools.pairwise(loop)]
    return "import loop: " + " -> ".join(loop) + "\n    " + "\n    ".join(steps)


def test_opslib_has_no_import_loops() -> None:
    graph = import_graph()
    assert "opslib.runbook" in graph and graph["opslib.cli"], "the walk found opslib's imports"
    found = loops(graph)
    assert not found, "\n".join(describe(loop, graph) for loop in found)


def test_the_walk_names_a_loop_through_a_function_level_import(tmp_path: Path) -> None:
    # the finder itself, on a made-up package: a lazy import closes the loop
    graph = {"p.a": {"p.b": 3}, "p.b": {"p.c": 9}, "p.c": {"p.a": 14}, "p.d": {"p.a": 1}}
    assert loops(graph) == [["p.a", "p.b", "p.c", "p.a"]]
    source = tmp_path / "b.py"
    source.write_text("import os\n\ndef f():\n    from . import c\n    from .c import thing\n")
    assert ("p.c", 4) in imported_names("p.b", source)
    assert ("p.c.thing", 5) in imported_names("p.b", source)


def test_the_engine_reaches_libvirt_only_through_opslib_virt() -> None:
    files = module_files()
    engine = ("params", "runbook", "runner", "ui", "records", "record_header", "paramsets")
    for name in engine:
        module = f"opslib.{name}"
        imports = {n for n, _ in imported_names(module, files[module])}
        assert not {n for n in imports if n == "libvirt" or n.startswith("libvirt.")}, module


def test_only_the_lab_and_the_command_line_import_the_lab() -> None:
    # The lab calls the runbooks and the adapters, never the other way round: shipped
    # code must not depend on the test lab. cli.py registers the lab's subcommands.
    files = module_files()
    allowed = {"opslib.cli"}
    found = [
        f"{module} imports {name} (line {line})"
        for module, path in files.items()
        if module not in allowed and module != "opslib.lab" and not module.startswith("opslib.lab.")
        for name, line in imported_names(module, path)
        if name == "opslib.lab" or name.startswith("opslib.lab.")
    ]
    assert "opslib.procedures.ipv6_tunnel" in files, "the walk found the procedures"
    assert not found, "\n".join(found)
