"""A record notebook's JSON: its header under ``metadata.opsbook`` (:data:`META_KEY`),
the structured results its cells displayed (:data:`RESULT_MIME`), the failing cell's
error, the one-line summary the index keeps, and secrets scrubbed before it is written.
Pure: dictionaries in, dictionaries or bytes out (the files are :mod:`.store`'s)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opslib.core import secrets

RESULT_MIME = "application/vnd.opsbook.result+json"
META_KEY = "opsbook"
LEAKED_SUMMARY = "a secret appeared in the record; it was redacted"


def dump_notebook(nb: Mapping[str, Any]) -> bytes:
    return (json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n").encode()


def results_of(nb: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every structured result (plans, results, reports) the notebook displayed, in order."""
    found = []
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []) or []:
            data = out.get("data") or {}
            if RESULT_MIME in data:
                value = data[RESULT_MIME]
                if isinstance(value, str):  # some writers keep JSON MIME data as text
                    with contextlib.suppress(ValueError):
                        value = json.loads(value)
                if isinstance(value, dict):
                    found.append(value)
    return found


def final_result(results: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The result that speaks for the run: the last result, else the last plan."""
    for kind in ("result", "plan"):
        for r in reversed(results):
            if r.get("kind") == kind:
                return r
    return None


def cell_error(nb: Mapping[str, Any]) -> str:
    """'Ename: evalue' of the first failing cell, or ''."""
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []) or []:
            if out.get("output_type") == "error":
                return f"{out.get('ename')}: {out.get('evalue')}".strip()
    return ""


def header_of(nb: Any) -> dict[str, Any] | None:
    """The header of a record notebook; None when ``nb`` is not one."""
    meta = nb.get("metadata") if isinstance(nb, dict) else None
    header = meta.get(META_KEY) if isinstance(meta, dict) else None
    return header if isinstance(header, dict) and "runbook" in header else None


def killed_at(nb: Mapping[str, Any]) -> str:
    """Which cell was running when the runner died (papermill marks it in its metadata)."""
    for cell in nb.get("cells", []):
        if cell.get("metadata", {}).get("papermill", {}).get("status") == "running":
            src = "".join(cell.get("source", ""))
            lines = [ln for ln in src.splitlines() if ln.strip() and not ln.startswith("#")]
            return f"the run died during: {lines[0][:200] if lines else '(empty cell)'}"
    return "the run died before it finished"


def with_header(nb: Mapping[str, Any], header: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(nb)
    meta = dict(out.get("metadata", {}))
    keep = {k: v for k, v in header.items() if k not in ("path", "sha256")}
    meta[META_KEY] = keep
    out["metadata"] = meta
    return out


def redact_leaks(
    nb: Mapping[str, Any], header: Mapping[str, Any], secret_values: Iterable[str]
) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """``(notebook, header, leaked)`` safe to write: call it before anything is written.

    Fails closed: when a secret loaded in this process occurs anywhere in the notebook
    or its header, both come back scrubbed, the summary is replaced by a fixed line
    (it may have held the secret) and the run is ``leaked-secret``, exit 1."""
    values = [s for s in secret_values if s]
    data = dump_notebook(with_header(nb, header))
    if not values or not secrets.find_leaks(data, values):
        return dict(nb), dict(header), False
    clean = json.loads(secrets.scrub(data, values))
    clean_header = dict(clean["metadata"][META_KEY])
    clean_header.update(status="leaked-secret", exit_code=1, summary=LEAKED_SUMMARY)
    return clean, clean_header, True


def summarize(nb: Mapping[str, Any], status: str) -> str:
    """One line for the index: the failing cell's error, else the final result's summary."""
    err = cell_error(nb)
    final = final_result(results_of(nb))
    if err and status != "ok":
        return err.splitlines()[0][:300]
    if final is None:
        return ""
    if final.get("kind") == "plan":
        n = len(final.get("changes", []))
        return f"plan only: {n} change{'s' * (n != 1)} not applied" if n else "plan: nothing to do"
    text = str(final.get("summary") or final.get("status") or "")
    return text.splitlines()[0][:300] if text else ""
