"""What a runbook notebook calls: ``rb = runbook.start(globals())``, then plan/apply/report.

``start`` reads the declarations of the notebook's ``parameters`` cell, takes
the values from the notebook's globals (papermill's injected cell overrides
them), validates them with :mod:`opslib.core.params`, and returns a :class:`Runbook`.

Headless (``opsbook run`` sets ``OPSBOOK_HEADLESS=1``) nothing waits on a
widget: ``rb.apply`` applies when the ``apply`` parameter is true, under the
host's apply lock. Interactive (JupyterLab), ``start`` shows a form right after
the parameters cell; ``rb.plan`` shows a Plan button, ``rb.apply`` an Apply
button (and Save plan: a plan record, :mod:`opslib.engine.form_records`); each interactive
apply is filed as a record in the same store. Apply applies the notebook's ``plan``
variable: the cell ``plan = rb.plan(...)`` binds it, each click of Plan binds it again,
and it is None (Apply disabled) once the form changed or the plan was applied; where
the host's policy asks for an approved saved plan, Apply stays disabled and says why
(:mod:`opslib.contract.plan_gate`, which every apply checks). The form has no ``apply`` field:
there the Apply button is what makes the changes. :mod:`opslib.engine.ui` draws the form and
the panels; it gets callables from here (plan, apply, run, save), never the Runbook.

Every plan and result is displayed with the MIME type
``application/vnd.opsbook.result+json`` beside its HTML and text, so a record's
results are readable without a kernel.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from opslib.contract import plan_gate, plan_records
from opslib.core import params
from opslib.core.changes import Plan, Result
from opslib.core.errors import ApplyError, InputError, OpsError
from opslib.core.locks import host_lock
from opslib.engine import form_records, notebook_params
from opslib.records import clock, store

__all__ = [
    "HEADLESS_ENV",
    "PLAN_VARIABLE",
    "Runbook",
    "headless",
    "start",
]

HEADLESS_ENV = "OPSBOOK_HEADLESS"
# The notebook's variable that holds the plan Apply applies (docs/conventions.md: the
# cells are `plan = rb.plan(X.plan)` and `rb.apply(X.apply, plan)`).
PLAN_VARIABLE = "plan"
# The parameter that makes a headless run apply; interactively the Apply button does.
APPLY_PARAMETER = "apply"


def headless() -> bool:
    return os.environ.get(HEADLESS_ENV, "") not in ("", "0")


def start(ns: MutableMapping[str, Any]) -> Runbook:
    """The runbook of the calling notebook: ``rb = runbook.start(globals())``."""
    path = notebook_params.notebook_path(ns)
    if path is not None:
        info = params.read_runbook(path)
        name, decls, purpose = info.name, list(info.params), info.purpose
    else:
        name, decls, purpose = "notebook", notebook_params.declarations_from_history(ns), ""
    name = os.environ.get("OPSBOOK_RUNBOOK") or name
    raw = {p.name: ns.get(p.name, p.default) for p in decls}
    if not headless():
        for key, value in notebook_params.preset_values(name, decls, raw).items():
            raw[key] = ns[key] = value
    rb = Runbook(name, decls, raw, ns, path=path, purpose=purpose)
    from opslib.engine import ui

    ui.install_error_display()
    if rb.headless:
        rb.values = params.validate(decls, raw)
    else:
        # No `apply` field: a ticked box would apply at "Run All Cells", before the
        # operator saw the plan (the lab's parameter sets say apply: true for headless
        # runs); stepping through, the Apply button under the plan makes the changes.
        rb.form = ui.Form(
            rb.name,
            rb.purpose,
            [p for p in decls if p.name != APPLY_PARAMETER],
            rb.raw,
            rb.errors,
            set_value=rb.set,
            choices=rb.choices,
        ).shown()
    return rb


class Runbook:
    """The running notebook: its parameters and the plan/apply/report verbs."""

    def __init__(
        self,
        name: str,
        decls: list[params.Param],
        raw: dict[str, Any],
        ns: MutableMapping[str, Any],
        *,
        path: Path | None = None,
        purpose: str = "",
    ) -> None:
        self.name, self.decls, self.ns, self.path, self.purpose = name, decls, ns, path, purpose
        self.raw = dict(raw)
        self.values: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.headless = headless()
        self.form: Any = None
        self.plan_button: Any = None  # interactive: the Plan / Apply buttons (ipywidgets)
        self.apply_button: Any = None
        self.run_button: Any = None  # interactive read-only runbooks: Run / Save record
        self.save_button: Any = None
        self.save_plan_button: Any = None  # interactive changing runbooks: Save plan
        self.last_record_id = 0  # the interactive record filed last
        self.plan_panel_shown = False  # interactive: rb.plan showed a Plan button
        # Called after the form or the notebook's plan changed: the panels' refreshers.
        self.listeners: list[Callable[[], None]] = []
        self._revalidate()

    # -- parameters --------------------------------------------------------------------

    def _revalidate(self) -> None:
        self.errors, values = {}, {}
        for p in self.decls:
            try:
                values[p.name] = p.convert(self.raw.get(p.name, p.default))
            except InputError as exc:
                self.errors[p.name] = str(exc).split(": ", 1)[-1]
        if not self.errors:
            # the rules between fields (gateway needs address...): beside the field that
            # declares the rule, as opsbook run would refuse it
            try:
                params.check_rules(self.decls, values)
            except InputError as exc:
                name, _, why = str(exc).removeprefix("parameter ").partition(": ")
                self.errors[name] = why
        self.values = values

    def set(self, name: str, raw: Any) -> Mapping[str, str]:
        """Set a parameter from the form; returns every field's validation message."""
        self.raw[name] = raw
        self._revalidate()
        if name in self.values:
            self.ns[name] = self.values[name]  # later cells see the form's value
        if self.plan_panel_shown:
            self.ns[PLAN_VARIABLE] = None  # planned for other values: plan again
        self._changed()
        return self.errors

    def _changed(self) -> None:
        for listener in self.listeners:
            listener()

    @property
    def valid(self) -> bool:
        return not self.errors

    @property
    def host(self) -> str:
        return str(self.values.get("host") or os.environ.get("OPSBOOK_HOST") or params.this_host())

    @property
    def records(self) -> Path:
        env = os.environ.get("OPSBOOK_RECORDS")
        if env:
            return Path(env)
        if self.path is not None and self.path.resolve().parent.name == "notebooks":
            return self.path.resolve().parent.parent / "records"
        return Path("records")

    def choices(self, kind: str) -> list[str]:
        """The form's live choices: the names of the host's VMs or networks (kind "vm" or
        "network"), none while libvirt cannot be reached (the field stays free text)."""
        uri = self.values.get("libvirt_uri")
        if not uri:
            return []
        from opslib.host.libvirt import virt  # lazy: libvirt only where a form offers its names

        try:
            return virt.known_names(str(uri), kind)
        except OpsError:
            return []

    def kwargs_for(self, fn: Callable[..., Any], *, skip_first: bool = False) -> dict[str, Any]:
        """The parameters ``fn``'s signature names (plus ``host``), as keyword arguments."""
        if not self.valid:
            name, msg = next(iter(self.errors.items()))
            raise InputError(f"parameter {name}: {msg}")
        available = {**self.values, "host": self.host}
        sig = inspect.signature(fn)
        items = list(sig.parameters.values())
        if (
            skip_first
            and items
            and items[0].kind
            in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        ):
            items = items[1:]
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in items):
            return available
        kwargs = {}
        for p in items:
            if p.kind is inspect.Parameter.VAR_POSITIONAL:
                continue
            if p.name in available:
                kwargs[p.name] = available[p.name]
            elif p.default is inspect.Parameter.empty:
                raise InputError(
                    f"{fn.__module__}.{fn.__qualname__} needs {p.name!r}, which this notebook "
                    f"does not declare; add `{p.name} = ...  # TYPE: help` to its parameters cell"
                )
        return kwargs

    # -- verbs -------------------------------------------------------------------------

    def plan(self, fn: Callable[..., Plan]) -> Plan | None:
        """Compute and show the plan: ``plan = rb.plan(procedure.plan)``.

        Interactive: a Plan button; plans at once when the form is valid (None when
        not). The cell binds the first plan to ``plan``; each click binds the new one."""
        from opslib.engine import ui

        if self.headless:
            plan = fn(**self.kwargs_for(fn))
            saved = plan_records.saved_from_env()  # `opsbook apply PLAN`: that plan or none
            if saved is not None:
                plan = plan_records.against(saved, plan)
            ui.show_plan(plan)
            return plan

        def replanned(plan: Plan | None) -> None:
            self.ns[PLAN_VARIABLE] = plan
            self._changed()

        self.plan_panel_shown = True
        self.plan_button, first = ui.plan_panel(
            lambda: fn(**self.kwargs_for(fn)), ready=lambda: self.valid, replanned=replanned
        )
        return first

    def apply(self, fn: Callable[..., Result], plan: Plan | None) -> Result | None:
        """Apply the plan (headless: when ``apply`` is true) under the host's lock.

        Interactive: an Apply button that applies what the notebook's ``plan`` holds
        when it is clicked, and files the record."""
        from opslib.engine import ui

        if not self.headless:
            if plan is not self.ns.get(PLAN_VARIABLE):
                # Apply reads the notebook's `plan`; any other plan here would be ignored.
                raise InputError(
                    "rb.apply applies the notebook's `plan` variable: write "
                    "`plan = rb.plan(X.plan)`, then `rb.apply(X.apply, plan)`"
                )
            self.apply_button, self.save_plan_button, refresh = ui.apply_panel(
                self._plan_to_apply,
                lambda plan: self._apply_and_file(fn, plan),
                blocked=self._apply_blocked,
                save=self.save_plan,
            )
            self.listeners.append(refresh)
            return None
        if plan is None:
            raise InputError("rb.apply needs the plan from rb.plan(...)")
        if not self.values.get(APPLY_PARAMETER):
            ui.show_note(
                "Plan only: apply is false. Run again with -p apply true to make these changes."
            )
            return None
        result = self.run_apply(fn, plan)
        self._raise_if_failed(result)
        return result

    def _plan_to_apply(self) -> Plan | None:
        """What Apply would apply now: the notebook's plan, when there is one to apply."""
        plan = self.ns.get(PLAN_VARIABLE)
        if not isinstance(plan, Plan) or plan.empty or not self.valid:
            return None
        return plan

    def _apply_and_file(
        self, fn: Callable[..., Result], plan: Plan
    ) -> tuple[Path, Exception | None]:
        """An interactive apply: run it, file it (also when the procedure raised: the
        failed result carries the error), and clear the notebook's plan. Returns the
        record's path and the error the procedure raised, if any."""
        started = clock.iso(clock.utcnow())
        error: Exception | None = None
        saved = plan_gate.saved_or_none(plan, store.Store(self.records))
        try:
            try:
                result = self.run_apply(fn, plan)
            except Exception as exc:  # the lock, bad input, a bug: all of them filed
                error = exc
                result = Result(self.name, self.host, "failed", summary=_error_line(exc))
            path = self.save_interactive_record(
                plan,
                result,
                started=started,
                ended=clock.iso(clock.utcnow()),
                applies=saved,
            )
        finally:
            self.ns[PLAN_VARIABLE] = None  # the host changed: plan again before the next apply
            self._changed()
        return path, error

    def run_apply(self, fn: Callable[..., Result], plan: Plan) -> Result:
        from opslib.engine import ui

        with plan_gate.records_at(self.records):
            plan_gate.check(self.name, self.host, plan)  # the host's policy, every runbook
            with host_lock(self.records, self.host, self.name):
                result = fn(plan, **self.kwargs_for(fn, skip_first=True))
        ui.show_result(result)
        return result

    def report(self, fn: Callable[..., Result]) -> Result | None:
        """Run a read-only procedure and show its result: ``rb.report(procedure.run)``.

        Interactive: a Run button (run again after changing the form) and a Save
        record button; runs at once when the form is valid."""
        from opslib.engine import ui

        if not self.headless:
            self.run_button, self.save_button, stale = ui.report_panel(
                lambda: fn(**self.kwargs_for(fn)),
                lambda result, started, ended: self.save_interactive_record(
                    None, result, started=started, ended=ended
                ),
                ready=lambda: self.valid,
                what=f"Running {self.name}",
            )
            self.listeners.append(stale)
            return None
        result = fn(**self.kwargs_for(fn))
        ui.show_result(result)
        # No exception for failing checks: a read-only run changed nothing, its checks are
        # its answer. The runner files it failed (exit 1) from the result shown here, and
        # its line is the result's summary (which names the failing checks), not an
        # exception's class name and message.
        return result

    def _raise_if_failed(self, result: Result) -> None:
        if not result.failed:
            return
        failing = [c.name for c in result.checks if c.status == "fail"]
        what = result.summary or result.status
        if failing:
            what += f" (failing: {', '.join(failing)})"
        if result.status in ("failed", "rolled back"):
            raise ApplyError(f"{self.name}: {result.status}: {what}")
        raise OpsError(f"{self.name}: {what}")

    # -- interactive records -----------------------------------------------------------

    def _form(self) -> form_records.Form:
        return form_records.Form(
            self.name, self.host, self.decls, self.values, self.path, self.records
        )

    def save_interactive_record(
        self,
        plan: Plan | None,
        result: Result,
        *,
        started: str,
        ended: str,
        applies: plan_records.Saved | None = None,
    ) -> Path:
        """File an interactive apply (or a report, ``plan`` None) in the record store
        (:func:`opslib.engine.form_records.file_run`); ``applies``: the saved plan it applied."""
        self.last_record_id, path = form_records.file_run(
            self._form(), plan, result, started=started, ended=ended, applies=applies
        )
        return path

    def save_plan(self, plan: Plan) -> str:
        """Save plan: file ``plan`` as a plan record, bind the notebook's ``plan`` to it,
        and say what comes next (one line)."""
        saved, bound = form_records.file_plan(self._form(), plan)
        self.ns[PLAN_VARIABLE] = bound
        self._changed()
        return form_records.saved_line(saved)

    def _apply_blocked(self) -> str:
        """Why Apply is disabled for the notebook's plan ('' when it is not)."""
        plan = self._plan_to_apply()
        if plan is None:
            return ""
        with plan_gate.records_at(self.records):
            return plan_gate.blocked(self.name, self.host, plan)


def _error_line(exc: BaseException) -> str:
    """One line for a record's summary: the message of one of opslib's errors, else
    the class name too (a bug's message alone says little)."""
    text = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, OpsError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
