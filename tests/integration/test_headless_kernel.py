"""The kernel of a headless run (opslib.engine.run_cells, opslib.engine.headless_kernel):
the venv's kernelspec started without its debugger, beside the same kernelspec as
JupyterLab starts it, debugger included; and a run that fails before its first cell
leaves no kernel behind."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync

import opslib
from opslib.engine import run_cells
from opslib.engine.terminal import Terminal


async def _run_in(km: Any, code: str) -> tuple[list[str], dict[str, Any]]:
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=run_cells.KERNEL_START_TIMEOUT)
        printed: list[str] = []

        def output(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                printed.extend(msg["content"]["text"].split())
            if msg["msg_type"] == "error":
                printed.append(msg["content"]["ename"])

        await kc.execute_interactive(code, output_hook=output, timeout=120)
        info = (await kc.kernel_info(reply=True, timeout=60))["content"]
    finally:
        kc.stop_channels()
    return printed, info


def run_in(km: Any, code: str) -> tuple[list[str], dict[str, Any]]:
    """``code`` run by ``km``'s kernel: what it printed, and the kernel's kernel_info."""
    return run_sync(_run_in)(km, code)


@pytest.fixture
def headless() -> Iterator[Any]:
    with tempfile.TemporaryFile("w+") as log:
        manager = run_cells.started_kernel_manager(run_cells.choose_kernel(), log)
        try:
            yield manager.started
        finally:
            run_cells.stop_unclaimed(manager)


PROBE = "import sys; print('debugpy' in sys.modules, 'pydevd' in sys.modules)"


def test_a_headless_kernel_runs_without_the_debugger_yet_can_import_it(headless: Any) -> None:
    printed, info = run_in(headless, PROBE + "\nimport debugpy; print(debugpy.__name__)")
    assert printed == ["False", "False", "debugpy"]
    assert "debugger" not in info.get("supported_features", [])
    assert info["language_info"]["name"] == "python"


def test_a_headless_kernel_starts_where_the_run_started_beside_another_opslib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "opslib").mkdir()  # a checkout of another opsbook, say, without this module
    (tmp_path / "opslib" / "__init__.py").write_text("raise ImportError('the other opslib')\n")
    monkeypatch.chdir(tmp_path)
    with tempfile.TemporaryFile("w+") as log:
        manager = run_cells.started_kernel_manager(run_cells.choose_kernel(), log)
        try:
            printed, _info = run_in(manager.started, "import opslib; print(opslib.__file__)")
        finally:
            run_cells.stop_unclaimed(manager)
    assert printed == [opslib.__file__]


def test_the_same_kernelspec_as_jupyterlab_starts_it_keeps_its_debugger() -> None:
    name = run_cells.choose_kernel()
    km = AsyncKernelManager(kernel_name=name)
    assert "ipykernel_launcher" in km.kernel_spec.argv  # the kernelspec itself is unchanged
    run_sync(km.start_kernel)()
    try:
        printed, info = run_in(km, PROBE)
    finally:
        run_sync(km.shutdown_kernel)(now=True)
    assert printed == ["True", "True"]
    assert "debugger" in info["supported_features"]


def test_a_run_that_fails_before_its_first_cell_leaves_no_kernel(tmp_path: Path) -> None:
    partial = tmp_path / "partial.ipynb"
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    status, error = run_cells.execute(
        tmp_path / "gone.ipynb", partial, {}, {}, Terminal(), None, timeout=60
    )
    assert status == "failed" and "gone.ipynb" in error
    left = [
        " ".join(p.cmdline())
        for p in psutil.Process().children(recursive=True)
        if p.pid not in before and p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    ]
    assert left == []


def test_papermill_loads_without_format_checkers_and_leaves_their_packages_importable() -> None:
    probe = """
import sys
from opslib.engine import run_cells
run_cells.import_papermill()
import jsonschema, nbformat
print(sorted(jsonschema.FormatChecker().checkers.keys() & {"uri", "duration", "color"}))
print(nbformat.validator.get_validator(4, 5).name)
for name in run_cells.FORMAT_ONLY:
    try:
        __import__(name)
    except ImportError as exc:
        print(name, type(exc).__name__, exc)
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["[]", "fastjsonschema"]
