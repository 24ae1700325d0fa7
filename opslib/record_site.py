"""``opsbook records html``: the records as a static site a browser opens from the files.

Beside each record ``…/HHMMSSZ-RUNBOOK.ipynb`` its page ``…/HHMMSSZ-RUNBOOK.html``
(:mod:`opslib.record_pages`), written only when it is missing or older than its
record or than the code that renders it (:data:`RENDERER_FILES`): a second build with
nothing new writes no record page. Every build rewrites what is cheap and depends on
all runs: a page per host (``HOST/index.html``: the latest run of each runbook there,
the checks failing now), the index (``index.html``: every run, filters, a search box)
and its search data (``search.js``: each run's text from the index's FTS table, loaded
by a ``<script>`` so that it works from ``file://``, no server).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opslib import record_diff, record_pages, record_search, records
from opslib.errors import InputError
from opslib.record_pages import esc, status_cell, table_html

__all__ = ["RENDERER_FILES", "Built", "build", "renderer_stamp"]

_HERE = Path(__file__).resolve().parent
# The code a page is rendered by: a page older than any of these is rendered again.
RENDERER_FILES: tuple[Path, ...] = (
    _HERE / "record_site.py",
    _HERE / "record_pages.py",
    _HERE / "record_diff.py",
)
SEARCH_JS = "search.js"


def renderer_stamp() -> int:
    """The newest modification time (ns) of the renderer's code."""
    return max(p.stat().st_mtime_ns for p in RENDERER_FILES)


@dataclass(frozen=True)
class Built:
    runs: int
    rendered: int
    hosts: int
    index: Path


def _rel(target: Path, start: Path) -> str:
    return os.path.relpath(target, start)


def page_of(record: Path) -> Path:
    return record.with_suffix(".html")


def host_page(store: records.Store, host: str) -> Path:
    return store.root / host / "index.html"


def _stale(record: Path, page: Path, stamp: int) -> bool:
    try:
        made = page.stat().st_mtime_ns
    except FileNotFoundError:
        return True
    return made < max(record.stat().st_mtime_ns, stamp)


def _previous(rows: Sequence[records.Row]) -> dict[int, records.Row]:
    """Run id -> the run of the same runbook on the same host just before it."""
    last: dict[tuple[str, str], records.Row] = {}
    prev: dict[int, records.Row] = {}
    for r in sorted(rows, key=lambda r: (r.start, r.id)):
        key = (r.runbook, r.host)
        if key in last:
            prev[r.id] = last[key]
        last[key] = r
    return prev


def _run(nb: Mapping[str, Any]) -> dict[str, Any]:
    """A run as :func:`record_diff.diff_runs` takes it: header and final result."""
    return {
        "header": (nb.get("metadata") or {}).get(records.META_KEY, {}),
        "result": records.final_result(records.results_of(nb)),
    }


def render_record(
    store: records.Store, row: records.Row, previous: records.Row | None, index: Path
) -> None:
    record = store.abspath(row)
    page = page_of(record)
    nb = store.notebook(row)
    header = {**row.__dict__, **(nb.get("metadata") or {}).get(records.META_KEY, {})}
    since_prev = None
    lines: list[str] = []
    if previous is not None:
        prev_record = store.abspath(previous)
        since_prev = {
            "id": previous.id,
            "start": previous.start,
            "status": previous.status,
            "href": _rel(page_of(prev_record), page.parent),
        }
        try:
            lines = record_diff.diff_runs(_run(store.notebook(previous)), _run(nb))
        except InputError as exc:  # the previous record is unreadable: say so on the page
            lines = [f"? {exc}"]
    took = f" ({row.seconds:.0f} s)" if row.seconds is not None else ""
    html = record_pages.record_page(
        nb,
        header,
        run_id=row.id,
        results=records.results_of(nb),
        error=records.cell_error(nb),
        links={
            "index": _rel(index, page.parent),
            "host": _rel(host_page(store, row.host), page.parent),
            "ipynb": record.name,
            "took": took,
        },
        since=record_pages.since_html(since_prev, lines),
    )
    records.atomic_write(page, html.encode())


def build(
    store: records.Store, out: Path | None = None, *, progress: Callable[[str], None] | None = None
) -> Built:
    """Render what is new or stale, then the host pages, the index and its search data."""
    index = out or store.root / "index.html"
    record_search.catch_up(store)
    rows = store.list()
    stamp = renderer_stamp()
    previous = _previous(rows)
    rendered = 0
    for row in rows:
        record = store.abspath(row)
        if not record.exists() or not _stale(record, page_of(record), stamp):
            continue
        render_record(store, row, previous.get(row.id), index)
        rendered += 1
        if progress and rendered % 500 == 0:
            progress(f"{rendered} pages rendered")
    hosts = sorted({r.host for r in rows})
    for host in hosts:
        write_host_page(store, host, [r for r in rows if r.host == host], index)
    write_search_data(store, index.parent / SEARCH_JS)
    write_index(store, rows, index, hosts)
    return Built(runs=len(rows), rendered=rendered, hosts=len(hosts), index=index)


# -- host pages ----------------------------------------------------------------------------


def _run_link(store: records.Store, row: records.Row, start: Path) -> str:
    href = _rel(page_of(store.abspath(row)), start)
    return f'<a href="{esc(href)}">#{row.id}</a>'


def write_host_page(
    store: records.Store, host: str, rows: Sequence[records.Row], index: Path
) -> None:
    """The latest run of each runbook on ``host`` and the checks failing in them."""
    page = host_page(store, host)
    here = page.parent
    latest: dict[str, records.Row] = {}
    last_ok: dict[str, records.Row] = {}
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
            f"<td>{esc(name)}</td><td>{_run_link(store, r, here)}</td><td>{esc(r.start)}</td>"
            f"<td>{status_cell(r.status)}</td><td>{esc(r.summary)}</td>"
            f"<td>{esc(ok.start) if ok else 'never'}</td></tr>"
        )
        try:
            final = records.final_result(records.results_of(store.notebook(r))) or {}
        except InputError:
            final = {}
        for c in final.get("checks") or []:
            if c.get("status") == "fail":
                failing.append(
                    f"<tr><td>{esc(name)}</td><td>{esc(c.get('name'))}</td>"
                    f"<td>{esc(c.get('seen'))}</td><td>{esc(c.get('fix'))}</td>"
                    f"<td>{_run_link(store, r, here)}</td></tr>"
                )
    head = "<tr><th>runbook</th><th>latest run</th><th>start (UTC)</th><th>status</th>"
    head += "<th>summary</th><th>last ok</th></tr>"
    fail_head = "<tr><th>runbook</th><th>check</th><th>seen</th><th>fix</th><th>run</th></tr>"
    keys = ("id", "start", "runbook", "status", "summary")
    recent = [{k: getattr(r, k) for k in keys} for r in rows[:50]]
    body = [
        f"<h1>Host {esc(host)}</h1>",
        f'<h2 id="latest">Latest run of each runbook</h2><table id="latest-runs">'
        f"<thead>{head}</thead><tbody>{''.join(summary)}</tbody></table>",
        '<h2 id="failing">Checks failing now</h2>',
        f'<table id="failing-checks"><thead>{fail_head}</thead><tbody>{"".join(failing)}'
        "</tbody></table>"
        if failing
        else "<p>None: every runbook's latest run passed its checks.</p>",
        f"<h2>Recent runs</h2>{table_html(recent)}",
    ]
    nav = [("all records", _rel(index, here))]
    html = record_pages.page(f"host {host}", "\n".join(body), nav=nav)
    records.atomic_write(page, html.encode())


# -- index and search data -----------------------------------------------------------------


def write_search_data(store: records.Store, out: Path) -> None:
    """Each run's search text, as a script the index page loads (works from file://)."""
    with store.db() as con:
        texts = {str(r[0]): r[1] for r in con.execute("SELECT rowid, text FROM search")}
    data = json.dumps(texts, ensure_ascii=False, separators=(",", ":"))
    records.atomic_write(out, f"window.OPSBOOK_SEARCH = {data};\n".encode())


_SCRIPT = """
const f = id => document.getElementById(id);
const rows = Array.from(document.querySelectorAll("#runs tbody tr"));
const texts = window.OPSBOOK_SEARCH || {};
const lower = {};
function matchLine(id, words) {
  const text = texts[id] || "";
  const low = lower[id] ?? (lower[id] = text.toLowerCase());
  if (!words.every(w => low.includes(w))) return null;
  const lines = text.split("\\n");
  let best = lines[0], score = -1;
  for (const line of lines) {
    const l = line.toLowerCase(), s = words.filter(w => l.includes(w)).length;
    if (s > score) { best = line; score = s; }
  }
  return best;
}
function apply() {
  const words = f("search").value.toLowerCase().split(/\\s+/).filter(Boolean);
  const rb = f("f-runbook").value, host = f("f-host").value;
  const st = f("f-status").value, since = f("f-since").value;
  let shown = 0;
  for (const tr of rows) {
    const d = tr.dataset, cell = tr.querySelector("td.match");
    let hide = (rb && d.runbook !== rb) || (host && d.host !== host)
      || (st && d.status !== st) || (since && d.start < since);
    let line = "";
    if (!hide && words.length) {
      line = matchLine(d.id, words);
      hide = line === null;
    }
    cell.textContent = hide ? "" : (line || "");
    tr.hidden = Boolean(hide);
    if (!hide) shown++;
  }
  f("count").textContent = `${shown} of ${rows.length} runs shown`;
  history.replaceState(null, "", words.length ? "#q=" + encodeURIComponent(f("search").value)
    : location.pathname);
}
for (const id of ["search", "f-runbook", "f-host", "f-status", "f-since"]) f(id).oninput = apply;
if (location.hash.startsWith("#q=")) {
  f("search").value = decodeURIComponent(location.hash.slice(3));
}
apply();
"""


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def write_index(
    store: records.Store, rows: Sequence[records.Row], out: Path, hosts: Sequence[str]
) -> None:
    """Every run with client-side filters, a search box, links to the pages."""
    here = out.parent

    def options(values: set[str]) -> str:
        return "".join(f'<option value="{esc(v)}">{esc(v)}</option>' for v in sorted(values))

    lines = []
    for r in rows:
        record = store.abspath(r)
        page = page_of(record)
        link = (
            f'<a href="{esc(_rel(page, here))}">{esc(page.name)}</a>'
            if page.exists()
            else esc(page.name)
        )
        host_href = _rel(host_page(store, r.host), here)
        lines.append(
            f'<tr data-id="{r.id}" data-runbook="{esc(r.runbook)}" data-host="{esc(r.host)}" '
            f'data-status="{esc(r.status)}" data-start="{esc(r.start[:10])}">'
            f"<td>{r.id}</td><td>{esc(r.start.replace('T', ' '))}</td><td>{esc(r.runbook)}</td>"
            f'<td><a href="{esc(host_href)}">{esc(r.host)}</a></td>'
            f'<td class="{esc(r.status)}">{esc(r.status)}</td>'
            f"<td>{_yes_no(r.changed)}</td>"
            f"<td>{esc(r.summary)}</td>"
            f'<td>{link} · <a href="{esc(_rel(record, here))}">ipynb</a></td>'
            '<td class="match"></td></tr>'
        )
    host_links = " · ".join(
        f'<a href="{esc(_rel(host_page(store, h), here))}">{esc(h)}</a>' for h in hosts
    )
    generated = records.utcnow().strftime("%Y-%m-%d %H:%M:%SZ")
    body = f"""<h1>opsbook records</h1>
<p>{len(rows)} runs, generated {generated}. Hosts: {host_links or "none"}.</p>
<p><input id="search" type="search" placeholder="search: host, VM, MAC, address, check, text"
 aria-label="search the records"> <span id="count"></span></p>
<div id="filters">
runbook <select id="f-runbook"><option value="">all</option>{options({r.runbook for r in rows})}</select>
host <select id="f-host"><option value="">all</option>{options({r.host for r in rows})}</select>
status <select id="f-status"><option value="">all</option>{options({r.status for r in rows})}</select>
since <input id="f-since" type="date">
</div>
<table id="runs"><thead><tr><th>id</th><th>start (UTC)</th><th>runbook</th><th>host</th>
<th>status</th><th>changed</th><th>summary</th><th>record</th><th>match</th></tr></thead><tbody>
{chr(10).join(lines)}
</tbody></table>
<script src="{esc(_rel(here / SEARCH_JS, here))}"></script>
<script>{_SCRIPT}</script>"""  # noqa: E501
    records.atomic_write(out, record_pages.page("opsbook records", body).encode())
