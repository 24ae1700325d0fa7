#!/usr/bin/env python3
"""Write each runbook's notebook ``parameters`` cell from its declared inputs dataclass
(opslib.contract.inputs.parameters_cell); prints the notebooks it changed. tests/unit/test_contract.py
fails while a notebook's cell differs from its inputs."""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from pathlib import Path

import opslib.procedures
from opslib.contract import inputs

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def main() -> int:
    for info in pkgutil.iter_modules(opslib.procedures.__path__):
        module = importlib.import_module(f"opslib.procedures.{info.name}")
        cls = getattr(module, "Inputs", None)
        if cls is None or not inputs.declarations(cls, changing=False)[1:]:
            continue
        path = NOTEBOOKS / f"{module.RUNBOOK}.ipynb"
        nb = json.loads(path.read_text(encoding="utf-8"))
        cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
        text = inputs.parameters_cell(cls, changing=hasattr(module, "apply"))
        if "".join(cell["source"]) != text:
            cell["source"] = text.splitlines(keepends=True)
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
