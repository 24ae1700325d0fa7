"""Display of plans and results, and the interactive forms (the only IPython/ipywidgets user).

The renderers (``*_text``, ``*_html``) are pure: JSON of a Plan/Result in, text
out; ``opsbook records show`` uses the text ones without a kernel. The display
functions emit one bundle per plan/result: text/plain, text/html and the
structured JSON under :data:`opslib.records.RESULT_MIME`.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opslib.records import RESULT_MIME
from opslib.tables import dict_table

if TYPE_CHECKING:
    from opslib.changes import Plan, Result
    from opslib.runbook import Runbook

__all__ = [
    "bundle_output",
    "install_error_display",
    "plan_text",
    "result_text",
    "show_plan",
    "show_result",
]

_STATUS_COLOR = {
    "changed": "#1a7f37",
    "unchanged": "#57606a",
    "ok": "#1a7f37",
    "rolled back": "#bc4c00",
    "failed": "#cf222e",
    "planned": "#0969da",
    "warn": "#9a6700",
    "fail": "#cf222e",
}


# -- pure renderers -------------------------------------------------------------------------


def _table_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "  (none)\n"
    return dict_table(rows, columns, indent="  ") + "\n"


def _checks_shown(checks: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Checks as displayed, and their columns: a fix only beside a check that is not ok
    (a fix beside "ok" reads as a problem), and no fix column when nothing needs one."""
    rows = [{**c, "fix": (c.get("fix") or "") if c.get("status") != "ok" else ""} for c in checks]
    columns = ["name", "status", "seen"] + (["fix"] if any(r["fix"] for r in rows) else [])
    return rows, columns


def plan_text(plan: Mapping[str, Any]) -> str:
    changes = plan.get("changes", [])
    out = [
        f"Plan for {plan.get('runbook')} on {plan.get('host')}: "
        f"{len(changes) or 'no'} change{'s' * (len(changes) != 1)}\n"
    ]
    for c in changes:
        out.append(f"  {c.get('action')} {c.get('target')}: {c.get('summary')}\n")
        out += [f"    {line}\n" for line in (c.get("diff") or "").splitlines()]
    out += [f"  note: {n}\n" for n in plan.get("notes", [])]
    return "".join(out)


def result_text(result: Mapping[str, Any]) -> str:
    if result.get("kind") == "plan":
        return plan_text(result)
    out = [
        f"{result.get('runbook')} on {result.get('host')}: {result.get('status')}"
        + (f": {result['summary']}" if result.get("summary") else "")
        + "\n"
    ]
    if result.get("changes"):
        out.append("Changes:\n")
        for c in result["changes"]:
            out.append(f"  {c.get('action')} {c.get('target')}: {c.get('summary')}\n")
    if result.get("checks"):
        out.append("Checks:\n")
        out.append(_table_text(*_checks_shown(result["checks"])))
    if result.get("steps"):
        out.append("Steps:\n")
        steps = [{**s, "ok": "ok" if s.get("ok") else "FAILED"} for s in result["steps"]]
        out.append(_table_text(steps, ["name", "ok", "seconds", "detail"]))
    columns = result.get("columns") or {}
    for name, rows in (result.get("tables") or {}).items():
        out.append(f"{name}:\n")
        out.append(_table_text(rows, columns.get(name)))
    return "".join(out)


def _diff_html(diff: str) -> str:
    lines = []
    for line in diff.splitlines():
        color = (
            "#1a7f37"
            if line.startswith("+") and not line.startswith("+++")
            else "#cf222e"
            if line.startswith("-") and not line.startswith("---")
            else "#0969da"
            if line.startswith("@@")
            else "#57606a"
        )
        lines.append(f'<span style="color:{color}">{html.escape(line)}</span>')
    return (
        '<pre style="background:#f6f8fa;padding:6px;border-radius:4px;margin:2px 0 8px">'
        + "\n".join(lines)
        + "</pre>"
    )


def _badge(status: str) -> str:
    color = _STATUS_COLOR.get(status, "#57606a")
    return (
        f'<span style="background:{color};color:white;padding:1px 8px;border-radius:8px;'
        f'font-weight:600">{html.escape(status)}</span>'
    )


def _table_html(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "<p><i>(none)</i></p>"
    import pandas as pd

    # Escape every cell here so that a "record" column can be a link (records-review).
    def cell(key: str, value: Any) -> str:
        text = html.escape("" if value is None else str(value))
        if key == "record" and text.endswith(".ipynb"):
            return f'<a href="{text}" target="_blank">{text}</a>'
        return text

    frame = pd.DataFrame([{k: cell(k, v) for k, v in r.items()} for r in rows])
    if columns:
        frame = frame[[c for c in columns if c in frame.columns]]
    return str(frame.to_html(index=False, escape=False, border=0))


def plan_html(plan: Mapping[str, Any]) -> str:
    changes = plan.get("changes", [])
    head = (
        f"<h4>Plan for {html.escape(str(plan.get('runbook')))} on "
        f"{html.escape(str(plan.get('host')))}: "
        f"{len(changes) or 'no'} change{'s' * (len(changes) != 1)}</h4>"
    )
    body = []
    for c in changes:
        body.append(
            f"<div><b>{html.escape(str(c.get('action')))}</b> "
            f"<code>{html.escape(str(c.get('target')))}</code>: "
            f"{html.escape(str(c.get('summary')))}</div>"
        )
        if c.get("diff"):
            body.append(_diff_html(c["diff"]))
    body += [f"<div><i>note:</i> {html.escape(n)}</div>" for n in plan.get("notes", [])]
    return head + "".join(body)


def result_html(result: Mapping[str, Any]) -> str:
    if result.get("kind") == "plan":
        return plan_html(result)
    parts = [
        f"<h4>{html.escape(str(result.get('runbook')))} on "
        f"{html.escape(str(result.get('host')))}: {_badge(str(result.get('status')))}</h4>"
    ]
    if result.get("summary"):
        parts.append(f"<p>{html.escape(str(result['summary']))}</p>")
    if result.get("changes"):
        parts.append("<h5>Changes</h5>")
        for c in result["changes"]:
            parts.append(
                f"<div><b>{html.escape(str(c.get('action')))}</b> "
                f"<code>{html.escape(str(c.get('target')))}</code>: "
                f"{html.escape(str(c.get('summary')))}</div>"
            )
            if c.get("diff"):
                parts.append(_diff_html(c["diff"]))
    if result.get("checks"):
        parts.append("<h5>Checks</h5>")
        parts.append(_table_html(*_checks_shown(result["checks"])))
    if result.get("steps"):
        parts.append("<h5>Steps</h5>")
        parts.append(_table_html(result["steps"], ["name", "ok", "seconds", "detail"]))
    columns = result.get("columns") or {}
    for name, rows in (result.get("tables") or {}).items():
        parts.append(f"<h5>{html.escape(name)}</h5>")
        parts.append(_table_html(rows, columns.get(name)))
    return "".join(parts)


def bundle(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "text/plain": result_text(data),
        "text/html": result_html(data),
        RESULT_MIME: dict(data),
    }


def bundle_output(data: Mapping[str, Any]) -> dict[str, Any]:
    """A notebook output (nbformat 4) holding ``data``'s bundle."""
    return {"output_type": "display_data", "metadata": {}, "data": bundle(data)}


# -- display in a kernel -------------------------------------------------------------------


def _display(data: Mapping[str, Any]) -> None:
    from IPython.display import display

    display(bundle(data), raw=True)


def show_plan(plan: Plan) -> None:
    _display(plan.to_json())


def show_result(result: Result) -> None:
    _display(result.to_json())


def show_note(text: str) -> None:
    from IPython.display import display

    display({"text/plain": text, "text/html": f"<p><i>{html.escape(text)}</i></p>"}, raw=True)


def install_error_display() -> None:
    """Show opslib errors as one red line instead of a traceback (bugs keep theirs)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    from opslib.errors import OpsError

    def one_line(
        shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: int | None = None
    ) -> list[str]:
        # IPython discards a custom handler's return value: emit the error output
        # ourselves, which also gives the kernel's execute_reply its ename/evalue.
        stb = [f"\x1b[31m{etype.__name__}: {value}\x1b[0m"]
        shell._showtraceback(etype, value, stb)
        return stb

    shell.set_custom_exc((OpsError,), one_line)


# -- interactive forms ---------------------------------------------------------------------


def _libvirt_choices(rb: Runbook, kind: str) -> list[str]:
    uri = rb.values.get("libvirt_uri")
    if not uri:
        return []
    from opslib import virt
    from opslib.errors import OpsError

    try:
        return virt.known_names(str(uri), kind)
    except OpsError:
        return []


class Form:
    """A widget per parameter, with its validation message beside it."""

    def __init__(self, rb: Runbook) -> None:
        import ipywidgets as w

        self.rb = rb
        self.listeners: list[Callable[[], None]] = []
        rows = []
        self.messages: dict[str, Any] = {}
        for p in rb.decls:
            value = rb.raw.get(p.name, p.default)
            style = {"description_width": "130px"}
            layout = w.Layout(width="420px")
            field: Any
            if p.type == "bool":
                field = w.Checkbox(value=bool(value), description=p.name, style=style, indent=True)
            elif p.type == "choice":
                field = w.Dropdown(
                    options=list(p.choices),
                    value=value if value in p.choices else p.choices[0],
                    description=p.name,
                    style=style,
                    layout=layout,
                )
            elif p.type in ("vm", "network") and (choices := _libvirt_choices(rb, p.type)):
                # live choices from the host's libvirt: pick one (or "all" when optional)
                options = [(name, name) for name in choices]
                if str(value) and str(value) not in choices:
                    options.insert(0, (f"{value} (not on this host)", str(value)))
                if p.optional:
                    options.insert(0, (f"(all {p.type}s)", ""))
                field = w.Dropdown(
                    options=options,
                    value=str(value) if str(value) in {v for _, v in options} else options[0][1],
                    description=p.name,
                    style=style,
                    layout=layout,
                )
            elif p.type in ("vm", "network"):
                field = w.Combobox(
                    value=str(value),
                    options=_libvirt_choices(rb, p.type),
                    ensure_option=False,
                    description=p.name,
                    style=style,
                    layout=layout,
                    placeholder="(empty)" if p.optional else "",
                )
            else:
                field = w.Text(
                    value="" if value is None else str(value),
                    description=p.name,
                    style=style,
                    layout=layout,
                    placeholder="file:/path or env:NAME" if p.type == "secret" else "",
                )
            field.tooltip = f"{p.type_label}: {p.help}"
            msg = w.HTML(value=self._msg(rb.errors.get(p.name, ""), p.help))
            self.messages[p.name] = msg
            field.observe(self._changed(p.name), names="value")
            rows.append(w.HBox([field, msg]))
        self.box = w.VBox([w.HTML(f"<b>{rb.name}</b>: {html.escape(rb.purpose)}"), *rows])

    @staticmethod
    def _msg(error: str, help_text: str) -> str:
        if error:
            return f'<span style="color:#cf222e">✗ {html.escape(error)}</span>'
        return f'<span style="color:#57606a">{html.escape(help_text)}</span>'

    def _changed(self, name: str) -> Callable[[dict[str, Any]], None]:
        def handler(change: dict[str, Any]) -> None:
            self.rb.set(name, change["new"])
            help_of = {p.name: p.help for p in self.rb.decls}
            for n, msg in self.messages.items():
                msg.value = self._msg(self.rb.errors.get(n, ""), help_of[n])
            for listener in self.listeners:
                listener()

        return handler


def show_form(rb: Runbook) -> Form:
    from IPython.display import display

    form = Form(rb)
    display(form.box)
    return form


def plan_panel(rb: Runbook) -> Plan | None:
    """The Plan button and its output; plans at once when the form is valid."""
    import ipywidgets as w
    from IPython.display import display

    button = w.Button(description="Plan", button_style="info", icon="list")
    out = w.Output()

    def do_plan(_: Any = None) -> None:
        out.clear_output()
        with out:
            if not rb.valid:
                show_note("Fix the parameters above first.")
                return
            show_plan(rb.compute_plan())
        for listener in rb.form.listeners if rb.form else []:
            listener()

    button.on_click(do_plan)
    rb.plan_button = button
    display(w.VBox([button, out]))
    do_plan()
    return rb.last_plan


def apply_panel(rb: Runbook, fn: Callable[..., Result]) -> None:
    """The Apply button: enabled once a plan for the current values is shown."""
    import ipywidgets as w
    from IPython.display import display

    from opslib.changes import Result
    from opslib.errors import OpsError
    from opslib.records import iso

    button = w.Button(
        description="Apply",
        button_style="danger",
        icon="play",
        tooltip="make the changes of the plan shown above",
    )
    out = w.Output()
    busy = {"applying": False}

    def refresh() -> None:
        plan = rb.last_plan
        button.disabled = busy["applying"] or plan is None or plan.empty or not rb.valid

    def do_apply(_: Any) -> None:
        plan = rb.last_plan
        if plan is None:
            return
        busy["applying"] = True
        refresh()
        out.clear_output()
        started = iso(datetime.now(UTC))
        t0 = time.monotonic()
        error: Exception | None = None
        with out, _Progress(f"Applying {len(plan.changes)} change(s)"):
            try:
                try:
                    result = rb.run_apply(fn, plan)
                except Exception as exc:
                    # Every interactive apply is filed, also one whose procedure raised:
                    # a failed result carries the error (the lock, bad input, a bug).
                    error = exc
                    result = Result(rb.name, rb.host, "failed", summary=_error_line(exc))
                path = rb.save_interactive_record(
                    plan, result, started=started, ended=iso(datetime.now(UTC))
                )
                if error is not None:
                    show_note(f"{type(error).__name__}: {error}")
                show_note(f"Record: {path} ({time.monotonic() - t0:.1f} s)")
                if error is not None and not isinstance(error, OpsError):
                    raise error  # not one of ours: a bug, shown with its traceback
            finally:
                busy["applying"] = False
                rb.last_plan = None  # the state changed: plan again before the next apply
                refresh()

    button.on_click(do_apply)
    rb.apply_button = button
    if rb.form is not None:
        rb.form.listeners.append(refresh)
    refresh()
    display(w.VBox([button, out]))


def _error_line(exc: BaseException) -> str:
    """One line for a record's summary: the message of one of opslib's errors, else
    the class name too (a bug's message alone says little)."""
    from opslib.errors import OpsError

    text = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, OpsError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Progress:
    """A line that names the current step and counts the seconds while a runbook works.

    A button's callback holds the kernel until it returns; a thread ticks the seconds
    meanwhile (widget messages may be sent from any thread). A step change is shown at
    once, not at the next tick, and the line keeps the steps already passed, so that even
    an apply of about a second shows the operator where it went.
    """

    def __init__(self, what: str) -> None:
        import ipywidgets as w

        self.what = what
        self.step = ""  # the procedure's current step, from Result.step
        self.step_started = 0.0
        self.passed: list[str] = []  # earlier steps with their seconds, in order
        self.started = time.monotonic()
        self.label = w.HTML()
        self.lock = threading.Lock()  # the tick thread and the step listener both write
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._tick, daemon=True)
        self._watch: Any = None

    def _text(self) -> str:
        now = time.monotonic()
        step = ""
        if self.step:
            step = f": {html.escape(self.step)} ({now - self.step_started:.0f} s)"
        trail = ""
        if self.passed:
            passed = html.escape(", ".join(self.passed))
            trail = f' <span class="opsbook-progress-passed">(done: {passed})</span>'
        return (
            f'<span class="opsbook-progress" style="color:#9a6700">⏳ {html.escape(self.what)}'
            f"{step}… {now - self.started:.0f} s{trail}</span>"
        )

    def _show(self) -> None:
        with self.lock:
            self.label.value = self._text()

    def _on_step(self, name: str) -> None:
        now = time.monotonic()
        with self.lock:
            if self.step:
                self.passed.append(f"{self.step} {now - self.step_started:.1f} s")
            self.step, self.step_started = name, now
        self._show()

    def _tick(self) -> None:
        while not self.done.wait(1.0):
            self._show()

    def __enter__(self) -> _Progress:
        from IPython.display import display

        from opslib.changes import watching_steps

        self.started = time.monotonic()
        self._show()
        display(self.label)
        self._watch = watching_steps(self._on_step)
        self._watch.__enter__()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()
        self._watch.__exit__(None, None, None)
        self.label.close()


def report_panel(rb: Runbook, fn: Callable[..., Result]) -> None:
    """A read-only runbook's Run button (runs at once when valid) and Save record button."""
    import ipywidgets as w
    from IPython.display import display

    from opslib.errors import OpsError
    from opslib.records import iso

    run_button = w.Button(description="Run", button_style="info", icon="search")
    save_button = w.Button(
        description="Save record",
        icon="save",
        disabled=True,
        tooltip="file the result shown below in the record store",
    )
    out = w.Output()
    shown: dict[str, Any] = {}

    def do_run(_: Any = None) -> None:
        shown.clear()
        run_button.disabled = save_button.disabled = True
        out.clear_output()
        started = iso(datetime.now(UTC))
        with out:
            if not rb.valid:
                show_note("Fix the parameters above first.")
            else:
                try:
                    with _Progress(f"Running {rb.name}"):
                        result = fn(**rb.kwargs_for(fn))
                    show_result(result)
                    shown.update(result=result, started=started, ended=iso(datetime.now(UTC)))
                except OpsError as exc:
                    show_note(f"{type(exc).__name__}: {exc}")
        run_button.disabled = False
        save_button.disabled = "result" not in shown

    def do_save(_: Any) -> None:
        if "result" not in shown:
            return
        save_button.disabled = True
        path = rb.save_interactive_record(
            None, shown.pop("result"), started=shown["started"], ended=shown["ended"]
        )
        with out:
            show_note(f"Record: {path}")

    def stale() -> None:  # the form changed: the shown result is not for these values
        save_button.disabled = True
        shown.pop("result", None)

    run_button.on_click(do_run)
    save_button.on_click(do_save)
    rb.run_button, rb.save_button = run_button, save_button
    if rb.form is not None:
        rb.form.listeners.append(stale)
    display(w.VBox([w.HBox([run_button, save_button]), out]))
    do_run()
