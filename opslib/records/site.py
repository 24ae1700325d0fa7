"""``opsbook records html``: the records as a static site a browser opens from the files.

Beside each record ``…/HHMMSSZ-RUNBOOK.ipynb`` its page ``…/HHMMSSZ-RUNBOOK.html``
(:mod:`opslib.records.pages`), written only when it is missing or older than its
record or than the code that renders it (:data:`RENDERER_FILES`): a second build with
nothing new writes no record page. Every build rewrites what is cheap and depends on
all runs: a page per host (``HOST/index.html``: the latest run of each runbook there,
the checks failing now) and the index (``index.html``: the newest runs, filters, a
search over all runs; :mod:`opslib.records.index`).
"""

from __future__ import annotations

import json
import os
import shlex
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from opslib.core.errors import InputError
from opslib.records import diff, plan_index, plan_pages, search
from opslib.records import index as record_index
from opslib.records import pages as record_pages
from opslib.records import store as records
from opslib.records import notebook_json
from opslib.core.errors import InputError
from opslib.records.index import Run
from opslib.records.pages import status_cell
from opslib.records.render import esc

__all__ = [
    "RENDERER_FILES",
    "Built",
    "build",
    "check_index_target",
    "check_target",
    "notebook_html",
    "renderer_stamp",
]

_HERE = Path(__file__).resolve().parent
# The code a page is rendered by: a page older than any of these is rendered again.
RENDERER_FILES: tuple[Path, ...] = (
    _HERE / "site.py",
    _HERE / "pages.py",
    _HERE / "render.py",
    _HERE / "diff.py",
    _HERE / "row_diff.py",
    _HERE / "plan_pages.py",
)
HOST_PAGE = record_index.HOST_PAGE


def renderer_stamp() -> int:
    """The newest modification time (ns) of the renderer's code."""
    return max(p.stat().st_mtime_ns for p in RENDERER_FILES)


@dataclass(frozen=True)
class Built:
    runs: int
    rendered: int
    hosts: int
    index: Path


def _rel(target: str | Path, start: str | Path) -> str:
    return os.path.relpath(target, start)


def _stale(record: str, page: str, stamp: int) -> bool | None:
    """Whether ``page`` must be rendered; None when the record is gone."""
    try:
        wrote = os.stat(record).st_mtime_ns
    except FileNotFoundError:
        return None
    try:
        made = os.stat(page).st_mtime_ns
    except FileNotFoundError:
        return True
    return made < max(wrote, stamp)


def _previous(rows: Sequence[Run]) -> dict[int, Run]:
    """Run id -> the run of the same runbook on the same host just before it."""
    last: dict[tuple[str, str], Run] = {}
    prev: dict[int, Run] = {}
    for r in sorted(rows, key=lambda r: (r.start, r.id)):
        key = (r.runbook, r.host)
        if key in last:
            prev[r.id] = last[key]
        last[key] = r
    return prev


def _run(nb: Mapping[str, Any]) -> dict[str, Any]:
    """A run as :func:`record_diff.diff_runs` takes it: header and final result."""
    return {
        "header": (nb.get("metadata") or {}).get(notebook_json.META_KEY, {}),
        "result": notebook_json.final_result(notebook_json.results_of(nb)),
    }


def _notebook(store: records.Store, run: Run) -> dict[str, Any]:
    try:
        return dict(json.loads((store.root / run.path).read_bytes()))
    except (OSError, ValueError) as exc:
        raise InputError(f"record {run.id}: cannot read {run.path}: {exc}") from None


def _seconds(run: Run) -> str:
    if not run.end:
        return ""
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    took = datetime.strptime(run.end, fmt) - datetime.strptime(run.start, fmt)
    return f" ({took.total_seconds():.0f} s)"


@dataclass(frozen=True)
class Plans:
    """The saved plans (opsbook plan) as the site links them."""

    rows: dict[int, plan_index.PlanRow]  # plan record id -> its plan
    applies: dict[int, plan_index.PlanRow]  # apply record id -> the plan it applied
    pages: dict[int, str]  # run id -> its page, relative to the store's root

    @classmethod
    def of(cls, store: records.Store, rows: Sequence[Run]) -> Plans:
        plans = {p.id: p for p in records.saved_plans(store)}
        applies = {int(r["id"]): p for p in plans.values() for r in [p.applied, *p.refused] if r}
        return cls(plans, applies, {r.id: r.page for r in rows})

    def href(self, here: Path, root: Path) -> Callable[[int], str | None]:
        def link(run_id: int) -> str | None:
            page = self.pages.get(run_id)
            return _rel(root / page, here) if page else None

        return link

    def section(self, run_id: int, here: Path, root: Path) -> str:
        href = self.href(here, root)
        if run_id in self.rows:
            return plan_pages.plan_section(self.rows[run_id], href)
        plan = self.applies.get(run_id)
        if plan is None:
            return ""
        return plan_pages.apply_section({"id": plan.id, "digest": plan.digest}, href(plan.id))


def render_record(
    store: records.Store, run: Run, previous: Run | None, index: Path, plans: Plans | None = None
) -> None:
    page = store.root / run.page
    here = page.parent
    try:
        nb = _notebook(store, run)
    except InputError as exc:  # a page that says so, rather than none
        nb = {"cells": [], "metadata": {}}
        error = str(exc)
    else:
        error = notebook_json.cell_error(nb)
    header = {**run.__dict__, **(nb.get("metadata") or {}).get(notebook_json.META_KEY, {})}
    since_prev = None
    lines: list[str] = []
    if previous is not None:
        since_prev = {
            "id": previous.id,
            "start": previous.start,
            "status": previous.status,
            "href": _rel(store.root / previous.page, here),
        }
        try:
            lines = diff.diff_runs(_run(_notebook(store, previous)), _run(nb))
        except InputError as exc:  # the previous record is unreadable: say so on the page
            lines = [f"? {exc}"]
    html = record_pages.record_page(
        nb,
        header,
        run_id=run.id,
        results=notebook_json.results_of(nb),
        error=error,
        links={
            "index": _rel(index, here),
            "host": _rel(store.root / run.host / HOST_PAGE, here),
            "ipynb": os.path.basename(run.path),
            "took": _seconds(run),
        },
        since=record_pages.since_html(since_prev, lines),
        saved=plans.section(run.id, here, store.root) if plans is not None else "",
    )
    records.atomic_write(page, html.encode())


def check_target(path: Path, option: str) -> None:
    """Refuse an HTML file ``path`` that cannot be written, before anything is."""
    if path.is_dir():
        raise InputError(f"{option} {path}: is a directory; give the file to write in it")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:  # the nearest existing one
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{option} {path}: {parent} is a file, not a directory")
    if parent != path.parent:
        fix = shlex.join(["mkdir", "-p", str(path.parent)])
        raise InputError(f"{option} {path}: no directory {path.parent}; make it first: {fix}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: cannot write in {parent}")


def check_index_target(store: records.Store, out: Path | None) -> None:
    """``records html -o OUT``: the index and its ``site.js`` can be written beside it."""
    if out is not None:
        check_target(out, "-o")
        if (out.parent / record_index.SITE_JS).is_dir():
            raise InputError(f"-o {out}: {out.parent / record_index.SITE_JS} is a directory")


def build(
    store: records.Store, out: Path | None = None, *, progress: Callable[[str], None] | None = None
) -> Built:
    """Render what is new or stale, then the host pages, the index and its search data."""
    check_index_target(store, out)
    index = out or store.root / "index.html"
    search.catch_up(store)
    rows = record_index.runs_of(store)
    stamp = renderer_stamp()
    previous = _previous(rows)
    plans = Plans.of(store, rows)
    root = str(store.root)
    rendered = 0
    pages: set[int] = set()
    for run in rows:
        stale = _stale(f"{root}/{run.path}", f"{root}/{run.page}", stamp)
        if stale is None:
            continue
        if stale or run.id in plans.rows:  # a plan's state moves with time and other runs
            render_record(store, run, previous.get(run.id), index, plans)
            rendered += 1
            if progress and rendered % 1000 == 0:
                progress(f"{rendered} pages rendered")
        pages.add(run.id)
    by_host: dict[str, list[Run]] = {}
    for run in rows:
        by_host.setdefault(run.host, []).append(run)
    for host, runs in sorted(by_host.items()):
        write_host_page(store, host, runs, index, pages)
    if plans.rows:
        href = plans.href(index.parent, store.root)
        html = plan_pages.plans_page(list(plans.rows.values()), href, index.name)
        record_index.write_if_changed(index.parent / plan_pages.PLANS_PAGE, html.encode())
    record_index.write(store, rows, pages, index, plans=bool(plans.rows))
    return Built(runs=len(rows), rendered=rendered, hosts=len(by_host), index=index)


# -- host pages ----------------------------------------------------------------------------


def write_host_page(
    store: records.Store, host: str, rows: Sequence[Run], index: Path, pages: set[int]
) -> None:
    """The latest run of each runbook on ``host`` and the checks failing in them."""
    page = store.root / host / HOST_PAGE

    def _run_link(run: Run) -> str:  # from ROOT/HOST/index.html; a run's page if it has one
        text = f"#{run.id}"
        return f'<a href="../{esc(run.page)}">{text}</a>' if run.id in pages else text

    latest: dict[str, Run] = {}
    last_ok: dict[str, Run] = {}
    for r in rows:  # newest first
        latest.setdefault(r.runbook, r)
        if r.status == "ok":
            last_ok.setdefault(r.runbook, r)
    summary, failing = [], []
    for name in sorted(latest):
        r = latest[name]
        ok = last_ok.get(name)
        summary.append(
            "<tr>"
            f"<td>{esc(name)}</td><td>{_run_link(r)}</td><td>{esc(r.start)}</td>"
            f"<td>{status_cell(r.status)}</td><td>{esc(r.summary)}</td>"
            f"<td>{esc(ok.start) if ok else 'never'}</td></tr>"
        )
        try:
            final = notebook_json.final_result(notebook_json.results_of(_notebook(store, r))) or {}
        except InputError:
            final = {}
        for c in final.get("checks") or []:
            if c.get("status") == "fail":
                failing.append(
                    f"<tr><td>{esc(name)}</td><td>{esc(c.get('name'))}</td>"
                    f"<td>{esc(c.get('seen'))}</td><td>{esc(c.get('fix'))}</td>"
                    f"<td>{_run_link(r)}</td></tr>"
                )
    head = "<tr><th>runbook</th><th>latest run</th><th>start (UTC)</th><th>status</th>"
    head += "<th>summary</th><th>last ok</th></tr>"
    fail_head = "<tr><th>runbook</th><th>check</th><th>seen</th><th>fix</th><th>run</th></tr>"
    recent = "".join(
        f"<tr><td>{_run_link(r)}</td><td>{esc(r.start)}</td><td>{esc(r.runbook)}</td>"
        f"<td>{status_cell(r.status)}</td><td>{esc(r.summary)}</td></tr>"
        for r in rows[:50]
    )
    body = [
        f"<h1>Host {esc(host)}</h1>",
        f'<h2 id="latest">Latest run of each runbook</h2><table id="latest-runs">'
        f"<thead>{head}</thead><tbody>{''.join(summary)}</tbody></table>",
        '<h2 id="failing">Checks failing now</h2>',
        f'<table id="failing-checks"><thead>{fail_head}</thead><tbody>{"".join(failing)}'
        "</tbody></table>"
        if failing
        else "<p>None: every runbook's latest run passed its checks.</p>",
        "<h2>Recent runs</h2><table><thead><tr><th>run</th><th>start (UTC)</th>"
        f"<th>runbook</th><th>status</th><th>summary</th></tr></thead><tbody>{recent}"
        "</tbody></table>",
    ]
    nav = [("all records", _rel(index, page.parent))]
    html = record_pages.page(f"host {host}", "\n".join(body), nav=nav)
    record_index.write_if_changed(page, html.encode())


# -- the executed notebook as nbconvert renders it (records show --html) ------------------

# nbconvert's lab template, less what it loads from the network (require.js, MathJax,
# mermaid, the widget manager): a record is opened on hosts without network, and opening
# one makes no request. Math and diagrams show as their source, widgets as their text.
_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""
# The lab template's order of output formats, less the two that need scripts from the
# network (widgets) or may fetch anything (JavaScript): such an output shows as its text.
_PRIORITY = [
    "text/html",
    "text/markdown",
    "image/svg+xml",
    "text/vnd.mermaid",
    "text/latex",
    "image/png",
    "image/jpeg",
    "text/plain",
]
# Whatever an output's own HTML names (an <img src="https://...">), the browser fetches
# nothing: images, fonts and styles from the page itself (inline, data:) only.
_CSP = (
    '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
    "img-src data:; font-src data:; style-src 'unsafe-inline'; "
    "script-src 'unsafe-inline'\">"
)


def notebook_html(path: Path) -> str:
    """The record notebook at ``path`` as one self-contained HTML page."""
    import nbconvert
    import nbformat
    from jinja2 import DictLoader
    from nbformat.validator import MissingIDFieldWarning
    from traitlets.config import Config

    try:
        with warnings.catch_warnings():  # records filed without cell ids: not the reader's
            warnings.simplefilter("ignore", MissingIDFieldWarning)
            nb = nbformat.read(str(path), as_version=4)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the record {path}: {exc}") from None
    exporter = nbconvert.HTMLExporter(
        config=Config({"NbConvertBase": {"display_data_priority": _PRIORITY}}),
        extra_loaders=[DictLoader({"opsbook-record.html.j2": _TEMPLATE})],
        template_file="opsbook-record.html.j2",
    )
    body, _ = exporter.from_notebook_node(nb)
    head = body.find("<head>")
    return body if head < 0 else body[: head + 6] + "\n" + _CSP + body[head + 6 :]
