"""The kernel of a headless run: ipykernel started as ``ipykernel_launcher`` starts it, but
without its debugger.

A headless run (:mod:`opslib.engine.run_cells`) starts the kernelspec's own argv
(``opsbook``, else ``python3``) with this module in place of ``ipykernel_launcher``: the
same interpreter and flags, the same kernel (``-P``: this module, and so the opslib the
notebook imports, is the kernelspec environment's even where the run started in a
directory holding another ``opslib``). Nothing attaches a debugger to a run nobody
watches, yet ipykernel imports debugpy at start when it is installed (about a quarter of
the kernel's start-up CPU). Here debugpy cannot be imported while ipykernel initialises,
so the kernel starts without the debugger (its kernel_info offers none, which no record
keeps); the notebook may still import debugpy once the kernel runs. JupyterLab starts the
``opsbook`` kernelspec unchanged, debugger included.

Once the run shuts the kernel down, its heap is frozen (``gc.freeze``) before Python
exits, as opsbook itself does at the end of a run (opslib.cli.main): the interpreter's
last garbage collections went through everything the notebook imported, a tenth of a
second of CPU while the run waited for the kernel to exit. The exit handlers still run
(ipykernel closes its sockets in one).
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

__all__ = ["MODULE", "main"]

MODULE = "opslib.engine.headless_kernel"  # what run_cells puts after the kernelspec's -m


def main() -> None:
    # As ipykernel_launcher: the working directory leaves sys.path while the kernel loads
    # (InteractiveShellApp.init_path puts it back for the notebook's imports); with -P
    # Python did not put it there.
    if sys.path and (sys.path[0] == "" or Path(sys.path[0]) == Path.cwd()):
        del sys.path[0]
    blocked = "debugpy" not in sys.modules
    if blocked:
        # ipykernel.debugger's `from debugpy.server import api` raises ImportError
        # (None in sys.modules), so ipykernel starts without the debugger.
        sys.modules["debugpy"] = None  # type: ignore[assignment]
    try:
        from ipykernel.kernelapp import IPKernelApp

        app = IPKernelApp.instance()
        app.initialize()
    finally:
        if blocked and "debugpy" in sys.modules and sys.modules["debugpy"] is None:
            del sys.modules["debugpy"]
    app.start()
    gc.freeze()  # the kernel was shut down: the process exits next


if __name__ == "__main__":
    main()
