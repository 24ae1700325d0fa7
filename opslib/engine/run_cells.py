"""The code cells of a headless run (opslib.engine.runner): one progress line per cell, from a
papermill engine that reports each cell's start and end, and a kernel whose own output
goes to a log instead of the operator's terminal."""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from typing import Any, TextIO

from opslib.engine.terminal import Terminal

ENGINE = "opsbook"

__all__ = ["ENGINE", "Progress", "cell_label", "engine", "failed_cell", "quiet_kernel_manager"]


def _first_line(source: str) -> str:
    for line in source.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return line.strip()
    return source.strip().splitlines()[0] if source.strip() else ""


def cell_label(cell: Mapping[str, Any]) -> str:
    """How a progress line names a cell: the parameter cells by their tag (their first
    line is a declaration whose comment a cut makes unreadable), others by their code."""
    tags = (cell.get("metadata") or {}).get("tags") or []
    for tag in ("injected-parameters", "parameters"):
        if tag in tags:
            return tag
    return _first_line("".join(cell.get("source", "")))


def failed_cell(nb: Mapping[str, Any]) -> str:
    for cell in nb.get("cells", []):
        if any(o.get("output_type") == "error" for o in cell.get("outputs", []) or []):
            return cell_label(cell)
    return "?"


class Progress:
    """One line per code cell: number, its label (:func:`cell_label`), outcome, seconds."""

    def __init__(self, stream: TextIO, total: int, terminal: Terminal) -> None:
        self.stream, self.total, self.n, self.t0 = stream, total, 0, 0.0
        self.terminal = terminal
        try:
            self.tty = stream.isatty()
        except (OSError, ValueError):
            self.tty = False

    def start(self, cell: Mapping[str, Any]) -> None:
        self.n += 1
        self.t0 = time.monotonic()
        text = cell_label(cell)
        self.line = f"  [{self.n:>{len(str(self.total))}}/{self.total}] {text[:60]:<60}"
        if self.tty:
            self.terminal.write(self.stream, self.line + "  …\r")

    def done(self, cell: Mapping[str, Any]) -> None:
        failed = any(o.get("output_type") == "error" for o in cell.get("outputs", []))
        mark = "FAILED" if failed else "ok"
        line = f"{self.line}  {mark:<6} {time.monotonic() - self.t0:5.1f} s\n"
        self.terminal.write(self.stream, line)


@functools.cache
def engine() -> str:
    """The name of the papermill engine that reports each code cell's start and end to the
    ``progress`` (a :class:`Progress`, or None) given to ``papermill.execute_notebook``,
    which passes its extra keyword arguments on to the engine. Registered once."""
    from papermill.engines import NBClientEngine, papermill_engines

    class OpsbookEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, **kwargs: Any) -> Any:
            progress: Progress | None = kwargs.pop("progress", None)
            if progress is not None:
                start, complete = nb_man.cell_start, nb_man.cell_complete

                def cell_start(cell: Any, cell_index: int | None = None, **kw: Any) -> Any:
                    if cell.cell_type == "code":
                        progress.start(cell)
                    return start(cell, cell_index, **kw)

                def cell_complete(cell: Any, cell_index: int | None = None, **kw: Any) -> Any:
                    if cell.cell_type == "code":
                        progress.done(cell)
                    return complete(cell, cell_index, **kw)

                nb_man.cell_start, nb_man.cell_complete = cell_start, cell_complete
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register(ENGINE, OpsbookEngine)
    return ENGINE


def quiet_kernel_manager(log: TextIO) -> type:
    """A kernel manager whose kernel writes its stderr (debugger and TCP warnings,
    tracebacks of crashes) to ``log`` instead of our terminal."""
    from jupyter_client.manager import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw: Any) -> None:  # type: ignore[override]
            kw.setdefault("stderr", log)
            kw.setdefault("stdout", log)
            await super()._async_start_kernel(**kw)

    return QuietKernelManager
