"""How opslib's modules depend on each other: layers imported one way, no import loops,
libvirt only through virt.

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
            # `from opslib.records import store` imports the package and the module
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
    assert "opslib.engine.runbook" in graph and graph["opslib.cli.main"], (
        "the walk found opslib's imports"
    )
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
    engine = (
        "core.params",
        "engine.runbook",
        "engine.runner",
        "engine.ui",
        "records.store",
        "records.header",
        "core.paramsets",
    )
    for name in engine:
        module = f"opslib.{name}"
        imports = {n for n, _ in imported_names(module, files[module])}
        assert not {n for n in imports if n == "libvirt" or n.startswith("libvirt.")}, module


def test_only_the_lab_and_the_command_line_import_the_lab() -> None:
    # The lab calls the runbooks and the adapters, never the other way round: shipped
    # code must not depend on the test lab. cli.py registers the lab's subcommands.
    files = module_files()
    allowed = {"opslib.cli.main"}
    found = [
        f"{module} imports {name} (line {line})"
        for module, path in files.items()
        if module not in allowed and module != "opslib.lab" and not module.startswith("opslib.lab.")
        for name, line in imported_names(module, path)
        if name == "opslib.lab" or name.startswith("opslib.lab.")
    ]
    assert "opslib.procedures.ipv6_tunnel" in files, "the walk found the procedures"
    assert not found, "\n".join(found)


# opslib's packages, lowest first: a module imports its own layer and the layers before it,
# never one after it (docs/architecture.md draws the same order).
LAYERS = (
    "core",
    "host",
    "records",
    "contract",
    "procedures",
    "engine",
    "schedule",
    "fleet",
    "cli",
    "lab",
)


def layer_of(module: str) -> int | None:
    """The index of a module's layer in LAYERS; None for the package root (``opslib``)."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    assert parts[1] in LAYERS, f"{module} is in no layer: add its package to LAYERS"
    return LAYERS.index(parts[1])


def upward_imports(files: dict[str, Path]) -> list[str]:
    found = []
    for module, path in files.items():
        mine = layer_of(module)
        for name, line in imported_names(module, path):
            if name not in files or mine is None:
                continue
            theirs = layer_of(name)
            # the command line registers the lab's subcommands: its one way into the lab
            wiring = module == "opslib.cli.main" and name.startswith("opslib.lab")
            if theirs is not None and theirs > mine and not wiring:
                found.append(
                    f"{module} (layer {LAYERS[mine]}) imports {name} "
                    f"(layer {LAYERS[theirs]}) on line {line}"
                )
    return found


def test_every_import_runs_down_the_layers() -> None:
    files = module_files()
    assert "opslib.cli.main" in files and "opslib.core.errors" in files, "the walk found opslib"
    found = upward_imports(files)
    assert not found, "imports that run upward:\n" + "\n".join(found)


def test_an_upward_import_is_named_with_its_line(tmp_path: Path) -> None:
    # the check itself, on a made-up tree: core reaching up into engine is named
    core = tmp_path / "errors.py"
    core.write_text("import os\n\n\ndef f():\n    from opslib.engine import runner\n")
    engine = tmp_path / "runner.py"
    engine.write_text("from opslib.core import errors\n")
    files = {"opslib.core.errors": core, "opslib.engine.runner": engine}
    assert upward_imports(files) == [
        "opslib.core.errors (layer core) imports opslib.engine.runner (layer engine) on line 5"
    ]
