"""The records site's index page (``index.html``) and its data (``site.js``).

The page holds the newest :data:`SHOWN` runs as plain HTML rows, so that it opens
quickly with 10,000 records and reads without scripts. ``site.js``, loaded by a
``<script>`` (which works from ``file://``, where a page may not fetch files), holds
every run: its row and its search text (the index's FTS table,
:mod:`opslib.records.search`). The filters and the search box go through all runs
there and draw the newest :data:`SHOWN` matches (all of them on request), each with
the line of its text that matched.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from opslib.records import store as records
from opslib.records import clock
from opslib.records import run_index
from opslib.records.pages import page
from opslib.records.render import esc

__all__ = ["HOST_PAGE", "SHOWN", "SITE_JS", "Run", "runs_of", "write", "write_if_changed"]

SITE_JS = "site.js"
HOST_PAGE = "index.html"  # a host's page: ROOT/HOST/index.html
SHOWN = 200  # rows drawn at a time


@dataclass(frozen=True)
class Run:
    """What the site shows of a run in lists (an index row, lighter than run_index.Row)."""

    id: int
    runbook: str
    host: str
    status: str
    changed: bool | None
    start: str
    end: str | None
    summary: str
    path: str  # the record, relative to the store's root
    page: str  # its page, relative to the store's root


def runs_of(store: records.Store) -> list[Run]:
    """Every run, newest first."""
    if not store.index_path.exists():
        return []
    with store.db() as con:
        return [
            Run(
                **run_index.index_values(r, r.keys()),
                page=os.path.splitext(r["path"])[0] + ".html",
            )
            for r in con.execute(
                "SELECT id, runbook, host, status, changed, start, end, summary, path "
                "FROM runs ORDER BY start DESC, id DESC"
            )
        ]


def write_if_changed(path: Path, data: bytes) -> None:
    """Write ``data`` unless ``path`` holds it already (no fsync of what did not change)."""
    with contextlib.suppress(FileNotFoundError):
        if path.read_bytes() == data:
            return
    records.atomic_write(path, data)


_CHANGED = {None: "-", True: "yes", False: "no"}

# Draws rows exactly as write() does; the fields of a run: see _site_data.
_SCRIPT = """
const site = window.OPSBOOK_SITE || {prefix: "", hostPage: "index.html", runs: []};
const SHOWN = %(shown)d;
const f = id => document.getElementById(id);
const tbody = f("runs").tBodies[0];
const lower = new Map();
let showAll = false;
const ESC = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;"};
const esc = s => String(s ?? "").replace(/[&<>"']/g, c => ESC[c]);
function matchLine(r, words) {
  let low = lower.get(r[0]);
  if (low === undefined) { low = r[9].toLowerCase(); lower.set(r[0], low); }
  if (!words.every(w => low.includes(w))) return null;
  let best = "", score = 0;
  for (const line of r[9].split("\\n")) {
    const l = line.toLowerCase(), s = words.filter(w => l.includes(w)).length;
    if (s > score) { best = line; score = s; }
  }
  return best;
}
function rowHtml(r, line) {
  const [id, start, runbook, host, status, changed, summary, path, hasPage] = r;
  const page = path.replace(/\\.ipynb$/, ".html"), name = esc(page.split("/").pop());
  const p = esc(site.prefix);
  const link = hasPage ? `<a href="${p}${esc(page)}">${name}</a>` : name;
  return `<tr data-id="${id}" data-runbook="${esc(runbook)}" data-host="${esc(host)}" `
    + `data-status="${esc(status)}" data-start="${esc(start.slice(0, 10))}">`
    + `<td>${id}</td><td>${esc(start.replace("T", " "))}</td><td>${esc(runbook)}</td>`
    + `<td><a href="${p}${esc(host)}/${esc(site.hostPage)}">${esc(host)}</a></td>`
    + `<td class="${esc(status)}">${esc(status)}</td><td>${changed}</td>`
    + `<td>${esc(summary)}</td><td>${link} · <a href="${p}${esc(path)}">ipynb</a></td>`
    + `<td class="match">${esc(line)}</td></tr>`;
}
function apply() {
  const query = f("search").value, words = query.toLowerCase().split(/\\s+/).filter(Boolean);
  const rb = f("f-runbook").value, host = f("f-host").value;
  const st = f("f-status").value, since = f("f-since").value;
  const hits = [];
  for (const r of site.runs) {
    if ((rb && r[2] !== rb) || (host && r[3] !== host) || (st && r[4] !== st)
        || (since && r[1].slice(0, 10) < since)) continue;
    let line = "";
    if (words.length && (line = matchLine(r, words)) === null) continue;
    hits.push(rowHtml(r, line));
  }
  const shown = showAll ? hits : hits.slice(0, SHOWN);
  tbody.innerHTML = shown.join("");
  count(hits.length, shown.length, `${hits.length} of ${site.runs.length} runs match`);
  history.replaceState(null, "", words.length ? "#q=" + encodeURIComponent(query)
    : location.pathname);
}
function count(total, shown, text) {
  f("count").textContent = text + (shown < total ? `; the newest ${shown} shown` : "");
  f("more").hidden = shown >= total;
}
for (const id of ["search", "f-runbook", "f-host", "f-status", "f-since"]) {
  f(id).oninput = () => { showAll = false; apply(); };
}
f("more").onclick = () => { showAll = true; apply(); };
function hashQuery(hash) {
  // A link cut short or typed by hand may hold an escape that decodes to nothing: the
  // search is then its text as written, never an error that stops this script.
  const raw = hash.slice(3);
  try { return decodeURIComponent(raw); } catch (e) { return raw; }
}
if (location.hash.startsWith("#q=")) {
  f("search").value = hashQuery(location.hash);
  apply();
} else {
  const n = site.runs.length;
  count(n, tbody.rows.length, `${n} runs`);
}
"""


def _site_data(store: records.Store, rows: Sequence[Run], pages: set[int], prefix: str) -> str:
    with store.db() as con:
        texts = dict(con.execute("SELECT rowid, text FROM search").fetchall())
    # the fields rowHtml() of _SCRIPT reads, in its order; r[9]: the search text
    runs = [
        [
            r.id,
            r.start,
            r.runbook,
            r.host,
            r.status,
            _CHANGED[r.changed],
            r.summary,
            r.path,
            int(r.id in pages),
            texts.get(r.id) or "",
        ]
        for r in rows
    ]
    data = {"prefix": prefix, "hostPage": HOST_PAGE, "runs": runs}
    return f"window.OPSBOOK_SITE = {json.dumps(data, ensure_ascii=False)};\n"


def _row(r: Run, prefix: str, has_page: bool) -> str:
    name = esc(os.path.basename(r.page))
    link = f'<a href="{prefix}{esc(r.page)}">{name}</a>' if has_page else name
    runbook, host, status = esc(r.runbook), esc(r.host), esc(r.status)
    return (
        f'<tr data-id="{r.id}" data-runbook="{runbook}" data-host="{host}" '
        f'data-status="{status}" data-start="{esc(r.start[:10])}">'
        f"<td>{r.id}</td><td>{esc(r.start.replace('T', ' '))}</td><td>{runbook}</td>"
        f'<td><a href="{prefix}{host}/{HOST_PAGE}">{host}</a></td>'
        f'<td class="{status}">{status}</td><td>{_CHANGED[r.changed]}</td>'
        f"<td>{esc(r.summary)}</td>"
        f'<td>{link} · <a href="{prefix}{esc(r.path)}">ipynb</a></td><td class="match"></td></tr>'
    )


def write(
    store: records.Store, rows: Sequence[Run], pages: set[int], out: Path, *, plans: bool = False
) -> None:
    """``out`` (the index page) and ``site.js`` beside it; ``pages``: the runs with a page;
    ``plans``: link the saved plans' page (opslib.records.plan_pages) beside it."""
    up = os.path.relpath(store.root, out.parent)
    prefix = "" if up == "." else up + "/"
    write_if_changed(out.parent / SITE_JS, _site_data(store, rows, pages, prefix).encode())

    def options(values: set[str]) -> str:
        return "".join(f'<option value="{esc(v)}">{esc(v)}</option>' for v in sorted(values))

    hosts = sorted({r.host for r in rows})
    host_links = " · ".join(f'<a href="{esc(prefix + h)}/{HOST_PAGE}">{esc(h)}</a>' for h in hosts)
    generated = clock.utcnow().strftime("%Y-%m-%d %H:%M:%SZ")
    plans_link = ' <a id="plans" href="plans.html">Saved plans</a>.' if plans else ""
    shown = "\n".join(_row(r, esc(prefix), r.id in pages) for r in rows[:SHOWN])
    body = f"""<h1>opsbook records</h1>
<p>{len(rows)} runs, generated {generated}. Hosts: {host_links or "none"}.{plans_link}</p>
<p><input id="search" type="search" placeholder="search: host, VM, MAC, address, check, text"
 aria-label="search the records"> <span id="count">the newest {min(len(rows), SHOWN)}
 of {len(rows)} runs</span> <button id="more" type="button">show all</button></p>
<div id="filters">
runbook <select id="f-runbook"><option value="">all</option>{options({r.runbook for r in rows})}</select>
host <select id="f-host"><option value="">all</option>{options(set(hosts))}</select>
status <select id="f-status"><option value="">all</option>{options({r.status for r in rows})}</select>
since <input id="f-since" type="date">
</div>
<table id="runs"><thead><tr><th>id</th><th>start (UTC)</th><th>runbook</th><th>host</th>
<th>status</th><th>changed</th><th>summary</th><th>record</th><th>match</th></tr></thead><tbody>
{shown}
</tbody></table>
<script src="{SITE_JS}"></script>
<script>{_SCRIPT % {"shown": SHOWN}}</script>"""  # noqa: E501
    records.atomic_write(out, page("opsbook records", body).encode())
