"""Display of plans and results, and the interactive forms (the only IPython/ipywidgets user).

The display functions emit one bundle per plan/result (:func:`opslib.records.render.bundle`:
text/plain, text/html and the structured JSON under
:data:`opslib.records.notebook_json.RESULT_MIME`); the renderer is the records site's too, so a
notebook and the site show a plan or a result the same way.

The form and the panels (Plan, Apply, Run / Save record) only draw widgets and
call what they are given: the parameters and callables to plan, apply, run and
save. What those do (the notebook's plan, the host's lock, the record) is
:mod:`opslib.engine.runbook`'s.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opslib.records.render import bundle

if TYPE_CHECKING:
    from pathlib import Path

    from opslib.core.changes import Plan, Result
    from opslib.core.params import Param

__all__ = ["install_error_display", "show_note", "show_plan", "show_result"]

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
    from opslib.core.errors import OpsError

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


class Form:
    """A widget per parameter, with its validation message beside it.

    ``set_value(name, raw)`` takes a field's new value and returns every field's
    validation message; ``choices(kind)`` lists the host's VMs or networks (kind "vm"
    or "network"), empty when there are none to offer."""

    def __init__(
        self,
        name: str,
        purpose: str,
        fields: Sequence[Param],
        raw: Mapping[str, Any],
        errors: Mapping[str, str],
        *,
        set_value: Callable[[str, Any], Mapping[str, str]],
        choices: Callable[[str], list[str]],
    ) -> None:
        import ipywidgets as w

        self.set_value = set_value
        self.help = {p.name: p.help for p in fields}
        rows = []
        self.messages: dict[str, Any] = {}
        for p in fields:
            value = raw.get(p.name, p.default)
            style = {"description_width": "130px"}
            layout = w.Layout(width="420px")
            live = choices(p.type) if p.type in ("vm", "network") else []
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
            elif live:
                # live choices from the host's libvirt: pick one (or "all" when optional)
                options = [(n, n) for n in live]
                if str(value) and str(value) not in live:
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
                    options=[],
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
            msg = w.HTML(value=self._msg(errors.get(p.name, ""), p.help))
            self.messages[p.name] = msg
            field.observe(self._changed(p.name), names="value")
            rows.append(w.HBox([field, msg]))
        self.box = w.VBox([w.HTML(f"<b>{html.escape(name)}</b>: {html.escape(purpose)}"), *rows])

    @staticmethod
    def _msg(error: str, help_text: str) -> str:
        if error:
            return f'<span style="color:#cf222e">✗ {html.escape(error)}</span>'
        return f'<span style="color:#57606a">{html.escape(help_text)}</span>'

    def _changed(self, name: str) -> Callable[[dict[str, Any]], None]:
        def handler(change: dict[str, Any]) -> None:
            errors = self.set_value(name, change["new"])
            for n, msg in self.messages.items():
                msg.value = self._msg(errors.get(n, ""), self.help[n])

        return handler

    def shown(self) -> Form:
        """The form, displayed under the cell that made it."""
        from IPython.display import display

        display(self.box)
        return self


def plan_panel(
    plan: Callable[[], Plan],
    *,
    ready: Callable[[], bool],
    replanned: Callable[[Plan | None], None],
) -> tuple[Any, Plan | None]:
    """The Plan button and its output. Plans at once when ``ready()`` (the form is
    valid) and returns that first plan with the button; each click plans again and
    hands the new plan (None while the form is not valid) to ``replanned``."""
    import ipywidgets as w
    from IPython.display import display

    button = w.Button(description="Plan", button_style="info", icon="list")
    out = w.Output()

    def make() -> Plan | None:
        out.clear_output()
        with out:
            if not ready():
                show_note("Fix the parameters above first.")
                return None
            planned = plan()
            show_plan(planned)
            return planned

    button.on_click(lambda _: replanned(make()))
    display(w.VBox([button, out]))
    return button, make()


def apply_panel(
    current: Callable[[], Plan | None],
    apply: Callable[[Plan], tuple[Path, Exception | None]],
    *,
    blocked: Callable[[], str] = lambda: "",
    save: Callable[[Plan], str] | None = None,
) -> tuple[Any, Any, Callable[[], None]]:
    """The Apply button, enabled while ``current()`` holds a plan to apply, ``blocked()``
    names no reason against it (the host's policy: shown beside the button) and no apply
    runs. A click hands that plan to ``apply``, which returns the record's path and the
    error the procedure raised (None when it returned). With ``save``, a Save plan button
    files the plan (``save`` says how it went, one line); once the plan is saved it reads
    Check approval (an approval is given elsewhere: ``opsbook approve``). Returns the two
    buttons (None without ``save``) and the function that updates them (call it when the
    plan or the form changed)."""
    import ipywidgets as w
    from IPython.display import display

    from opslib.core.errors import OpsError

    tip = "make the changes of the plan shown above"
    button = w.Button(description="Apply", button_style="danger", icon="play", tooltip=tip)
    saver = None
    if save is not None:
        saver = w.Button(icon="save", tooltip="file this plan to review, approve, apply as it is")
    reason = w.HTML()
    out = w.Output()
    busy = {"applying": False}

    def refresh() -> None:
        plan = current()
        why = blocked() if plan is not None else ""
        button.disabled = busy["applying"] or plan is None or bool(why)
        button.tooltip = why or tip
        reason.value = f"<span style='color:#a15c00'>⚠ {html.escape(why)}</span>" if why else ""
        if saver is not None:
            saver.disabled = busy["applying"] or plan is None
            saver.description = "Check approval" if plan is not None and plan.saved else "Save plan"

    def do_save(_: Any) -> None:
        plan = current()
        if plan is None or save is None:
            return
        if not plan.saved:
            out.clear_output()
            with out:
                try:
                    show_note(save(plan))
                except OpsError as exc:
                    show_note(f"{type(exc).__name__}: {exc}")
        refresh()

    def do_apply(_: Any) -> None:
        plan = current()
        if plan is None or blocked():
            return
        busy["applying"] = True
        refresh()
        out.clear_output()
        t0 = time.monotonic()
        with out, _Progress(f"Applying {len(plan.changes)} change(s)"):
            try:
                path, error = apply(plan)
                if error is not None:
                    show_note(f"{type(error).__name__}: {error}")
                show_note(f"Record: {path} ({time.monotonic() - t0:.1f} s)")
                if error is not None and not isinstance(error, OpsError):
                    raise error  # not one of ours: a bug, shown with its traceback
            finally:
                busy["applying"] = False
                refresh()

    button.on_click(do_apply)
    if saver is not None:
        saver.on_click(do_save)
    refresh()
    buttons = [b for b in (saver, button) if b is not None]
    display(w.VBox([w.HBox(buttons), reason, out]))
    return button, saver, refresh


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

        from opslib.core.changes import watching_steps

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


def report_panel(
    run: Callable[[], Result],
    save: Callable[[Result, str, str], Path],
    *,
    ready: Callable[[], bool],
    what: str,
) -> tuple[Any, Any, Callable[[], None]]:
    """A read-only runbook's Run button (runs at once when ``ready()``) and Save record
    button, which hands the result shown with its start and end times to ``save`` (it
    returns the record's path). Returns both buttons and the function that marks the
    shown result stale (call it when the form changed)."""
    import ipywidgets as w
    from IPython.display import display

    from opslib.core.errors import OpsError
    from opslib.records.clock import iso

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
            if not ready():
                show_note("Fix the parameters above first.")
            else:
                try:
                    with _Progress(what):
                        result = run()
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
        path = save(shown.pop("result"), shown["started"], shown["ended"])
        with out:
            show_note(f"Record: {path}")

    def stale() -> None:  # the form changed: the shown result is not for these values
        save_button.disabled = True
        shown.pop("result", None)

    run_button.on_click(do_run)
    save_button.on_click(do_save)
    display(w.VBox([w.HBox([run_button, save_button]), out]))
    do_run()
    return run_button, save_button, stale
