"""What a JupyterLab form files: an interactive apply or report, and a saved plan.

An interactive record is the runbook's notebook with a cell of the form's values and
the plan and result as shown (:func:`file_run`), filed like a headless run in the
same store. **Save plan** files a plan record (:func:`file_plan`): the same record as
``opsbook plan`` makes (mode ``plan``, the plan's changes with their diffs and its
fingerprint, sealed with who planned it, its expiry and its digest), so that it is
reviewed, approved and applied (here or with ``opsbook apply ID``) like one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opslib.contract import plan_gate, plan_records
from opslib.core import secrets
from opslib.core.changes import Plan, Result
from opslib.core.params import Param
from opslib.records import clock, notebook_json
from opslib.records import header as record_header
from opslib.records import store as records

__all__ = ["Form", "file_plan", "file_run", "saved_line"]


@dataclass(frozen=True)
class Form:
    """The running notebook as its records name it."""

    runbook: str
    host: str
    decls: Sequence[Param]
    values: Mapping[str, Any]  # the form's values, valid
    notebook: Path | None  # the runbook's file, None for an unsaved notebook
    store: Path  # the record store

    def filed_values(self, apply: bool | None) -> dict[str, Any]:
        values = dict(self.values)
        if apply is not None and "apply" in {p.name for p in self.decls}:
            values["apply"] = apply
        elif apply:
            values["apply"] = True  # host-health reads `apply` as "this run made changes"
        if "host" in values:
            values["host"] = self.host  # "" stands for this machine: file its name
        return values


def _notebook(form: Form) -> dict[str, Any]:
    if form.notebook is not None:
        return dict(json.loads(form.notebook.read_text(encoding="utf-8")))
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []}


def _code_cell(source: str, outputs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "cell_type": "code",
        "execution_count": None,
        "id": os.urandom(4).hex(),
        "metadata": {},
        "outputs": outputs,
        "source": source,
    }


def _header(
    form: Form,
    values: Mapping[str, Any],
    *,
    mode: str,
    start: str,
    status: str,
    changed: bool | None,
    summary: str,
    end: str,
) -> dict[str, Any]:
    """The record header of what the form files (a run, an apply, a saved plan)."""
    return record_header.finished(
        record_header.header(
            runbook=form.runbook,
            host=form.host,
            decls=form.decls,
            values=values,
            mode=mode,
            start=start,
        ),
        status=status,
        changed=changed,
        summary=summary,
        end=end,
    )


def _file(
    form: Form, nb: dict[str, Any], header: dict[str, Any], seal: Any = None
) -> tuple[int, Path]:
    # Fail closed: every secret loaded in this kernel is looked for before anything is written.
    nb, header, _ = notebook_json.redact_leaks(nb, header, secrets.loaded())
    if seal is not None:
        header = seal(header, nb)
    return records.Store(form.store).add(header, nb)


def file_run(
    form: Form,
    plan: Plan | None,
    result: Result,
    *,
    started: str,
    ended: str,
    applies: plan_records.Saved | None = None,
) -> tuple[int, Path]:
    """File an interactive apply (or a report, ``plan`` None): its id and path. The apply
    of a saved plan (``applies``) names it, and the plan names its apply (or, stale, the
    refusal) as ``opsbook apply`` links them.

    An apply is filed with ``apply = True`` among its parameters: the Apply button is
    what applied, and readers of the index (host-health's DNS drift) take ``apply`` as
    "this run made its changes"."""
    from opslib.records import render

    values = form.filed_values(True if plan is not None else None)
    assignments = "".join(f"{k} = {v!r}\n" for k, v in values.items())
    nb = _notebook(form)
    nb["cells"] = [
        *nb.get("cells", []),
        _code_cell(
            f"# interactive {'apply' if plan is not None else 'run'} from JupyterLab\n"
            f"{assignments}",
            [],
        ),
        *(
            [
                _code_cell("rb.plan(...)", [render.bundle_output(plan.to_json())]),
                _code_cell("rb.apply(...)", [render.bundle_output(result.to_json())]),
            ]
            if plan is not None
            else [_code_cell("rb.report(...)", [render.bundle_output(result.to_json())])]
        ),
    ]
    text = result.summary or result.status
    header = _header(
        form,
        values,
        mode="interactive",
        start=started,
        status="failed" if result.failed else "ok",
        changed=result.changed,
        summary=text.splitlines()[0][:300] if text else "",
        end=ended,
    )
    if applies is None:
        return _file(form, nb, header)
    link = {"id": applies.id, "digest": applies.digest, "record": applies.row.path}
    run_id, path = _file(form, nb, {**header, "applies_plan": link})
    store = records.Store(form.store)
    plan_records.after_apply(store, applies, run_id, header["status"], header["summary"])
    return run_id, path


def file_plan(form: Form, plan: Plan) -> tuple[plan_records.Saved, Plan]:
    """Save ``plan`` as a plan record; returns it and the plan bound to it ("plan #N")."""
    from opslib.records import render

    started = clock.iso(clock.utcnow())
    values = form.filed_values(False)
    nb = _notebook(form)
    nb["cells"] = [
        *nb.get("cells", []),
        _code_cell(
            "# plan saved from JupyterLab\n" + "".join(f"{k} = {v!r}\n" for k, v in values.items()),
            [],
        ),
        _code_cell("plan = rb.plan(...)", [render.bundle_output(plan.to_json())]),
    ]
    n = len(plan.changes)
    header = _header(
        form,
        values,
        mode="plan",
        start=started,
        status="ok",
        changed=False,
        summary=f"plan: {n} change{'s' * (n != 1)}",
        end=clock.iso(clock.utcnow()),
    )
    found = plan_gate.host_policy(form.host)
    by = plan_records.person()
    run_id, _ = _file(
        form,
        nb,
        header,
        lambda h, nb: plan_records.seal(h, nb, policy=found, planned_by=by),
    )
    saved = plan_records.load(records.Store(form.store), str(run_id))
    return saved, dataclasses.replace(plan, saved=saved.name)


def saved_line(saved: plan_records.Saved) -> str:
    """What Save plan says: the plan's id and what comes next, one line."""
    n = len((plan_records.plan_json(saved.nb) or {}).get("changes") or [])
    line = (
        f"Saved as {saved.name} by {saved.planned_by}: {n} change{'s' * (n != 1)}, "
        f"digest {saved.digest[:12]}, expires {saved.index.expires}. "
    )
    if saved.index.needs_approval:
        line += f"Another person approves it: opsbook approve {saved.id}; then "
    return line + f"Apply here, or: opsbook apply {saved.id}"
