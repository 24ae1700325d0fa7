"""The HTML of the records site, page by page: pure functions, data in, HTML out.

A record's page (:func:`record_page`): its header (runbook, host, who, when, status,
exit, parameters (a secret by its source only: records hold no secret values),
opslib version and revision), the run's results (plans with their diffs, changes,
checks, steps with their times, tables) first, what changed since the previous run
of the same runbook on the same host, and the executed cells last, collapsed. A plan or
result is rendered by :mod:`opslib.records.render`, as the notebook shows it.
:mod:`opslib.records.site` decides which pages to write and where.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from opslib.records.render import esc, result_html, table_html

__all__ = ["CSS", "page", "record_page", "status_cell"]

FAILING = ("failed", "bad-input", "killed", "timeout", "locked", "leaked-secret", "fail")

CSS = """
body { font: 14px system-ui, sans-serif; margin: 1.5em; max-width: 1300px; color: #1f2328; }
nav { margin-bottom: 1em; } nav a { margin-right: 1.2em; }
table { border-collapse: collapse; margin: 4px 0 12px; }
td, th { padding: 3px 10px; text-align: left; vertical-align: top; }
tr:nth-child(even) { background: #f6f8fa; } th { border-bottom: 2px solid #d0d7de; }
.ok, .changed, .unchanged { color: #1a7f37; }
.failed, .killed, .timeout, .locked, .leaked-secret, .bad-input, .fail, .rolled-back {
  color: #cf222e; font-weight: 600; }
.running, .warn, .planned { color: #9a6700; }
pre { background: #f6f8fa; padding: 6px; border-radius: 4px; overflow-x: auto; margin: 2px 0 8px; }
.add { color: #1a7f37; } .del { color: #cf222e; } .hunk { color: #0969da; } .ctx { color: #57606a; }
.error { background: #ffebe9; }
details { margin: 4px 0; } summary { cursor: pointer; }
.cell { border-left: 3px solid #d0d7de; padding-left: 8px; }
dl.header { display: grid; grid-template-columns: max-content auto; gap: 2px 14px; }
dl.header dt { font-weight: 600; } dl.header dd { margin: 0; }
#search { width: 28em; padding: 4px; font-size: 15px; }
#filters { margin: 8px 0; } #filters select, #filters input { margin-right: 1em; }
.match { color: #57606a; font-size: 12px; }
"""


def status_cell(status: str) -> str:
    return f'<span class="{esc(status.replace(" ", "-"))}">{esc(status)}</span>'


def page(title: str, body: str, *, nav: Sequence[tuple[str, str]] = ()) -> str:
    links = "".join(f'<a href="{esc(href)}">{esc(label)}</a>' for label, href in nav)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>\n"
        f"<nav>{links}</nav>\n{body}\n</body></html>\n"
    )


def _header_html(h: Mapping[str, Any], links: Mapping[str, str]) -> str:
    took = links.get("took", "")
    fields = [
        ("runbook", esc(h.get("runbook"))),
        ("host", f'<a href="{esc(links["host"])}">{esc(h.get("host"))}</a>'),
        ("who", esc(h.get("user"))),
        ("when", f"{esc(h.get('start'))} → {esc(h.get('end') or '…')}{esc(took)}"),
        ("status", status_cell(str(h.get("status")))),
        ("exit", esc(h.get("exit_code"))),
        ("changed", "-" if h.get("changed") is None else "yes" if h["changed"] else "no"),
        ("summary", esc(h.get("summary") or "-")),
        ("mode", esc(h.get("mode"))),
        ("opslib", f"{esc(h.get('opslib_version'))} (revision {esc(h.get('revision'))})"),
        ("record", f'<a href="{esc(links["ipynb"])}">{esc(links["ipynb"])}</a>'),
    ]
    params = h.get("parameters") or {}
    rows = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in fields)
    ptable = table_html(
        [{"parameter": k, "value": _param(v)} for k, v in params.items()], ["parameter", "value"]
    )
    return f'<dl class="header">{rows}</dl><h3>Parameters</h3>{ptable}'


def _param(value: Any) -> str:
    if isinstance(value, str) and (value.startswith("file:/") or value.startswith("env:")):
        return f"secret from {value}"  # a source; records never hold the value
    return json.dumps(value) if not isinstance(value, str) else value


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value or "")


def cells_html(nb: Mapping[str, Any]) -> str:
    """The executed cells, each collapsible, inside one collapsed block."""
    cells = nb.get("cells") or []
    out = []
    for n, cell in enumerate(cells, 1):
        src = _text(cell.get("source"))
        first = next((ln for ln in src.splitlines() if ln.strip()), "(empty)")[:100]
        secs = (cell.get("metadata") or {}).get("papermill", {}).get("duration")
        took = f" ({secs:.1f} s)" if isinstance(secs, int | float) else ""
        body = [f"<pre>{esc(src)}</pre>"]
        failed = False
        for o in cell.get("outputs") or []:
            kind = o.get("output_type")
            if kind == "stream":
                body.append(f"<pre>{esc(_text(o.get('text')))}</pre>")
            elif kind == "error":
                failed = True
                tb = _ANSI.sub("", "\n".join(o.get("traceback") or []))
                body.append(f'<pre class="error">{esc(tb or o.get("evalue"))}</pre>')
            else:
                data = o.get("data") or {}
                if "image/png" in data:
                    png = _text(data["image/png"]).strip()
                    body.append(f'<img alt="output" src="data:image/png;base64,{esc(png)}">')
                elif "text/plain" in data:
                    body.append(f"<pre>{esc(_text(data['text/plain']))}</pre>")
        mark = ' class="fail"' if failed else ""
        out.append(
            f'<details class="cell"><summary{mark}>[{n}] {cell.get("cell_type")}: '
            f"<code>{esc(first)}</code>{esc(took)}</summary>{''.join(body)}</details>"
        )
    return (
        f'<details id="cells"><summary>Executed notebook: {len(cells)} cells</summary>'
        f"{''.join(out)}</details>"
    )


def since_html(previous: Mapping[str, Any] | None, lines: Sequence[str]) -> str:
    """``previous``: id, start, href of the previous run (same runbook and host)."""
    head = '<h2 id="since">Since the previous run</h2>'
    if previous is None:
        return head + "<p>The first run of this runbook on this host in these records.</p>"
    prev = (
        f'<a href="{esc(previous["href"])}">#{esc(previous["id"])}</a> '
        f"({esc(previous['start'])}, {status_cell(str(previous['status']))})"
    )
    if not lines:
        return head + f"<p>No change since {prev}.</p>"
    items = []
    for line in lines:
        cls = {"+": "add", "-": "del", "~": "hunk"}.get(line[:1], "ctx")
        items.append(f'<li class="{cls}">{esc(line)}</li>')
    return head + f"<p>Compared with {prev}:</p><ul>{''.join(items)}</ul>"


def record_page(
    nb: Mapping[str, Any],
    header: Mapping[str, Any],
    *,
    run_id: int,
    results: Sequence[Mapping[str, Any]],
    error: str,
    links: Mapping[str, str],
    since: str,
    saved: str = "",
) -> str:
    """``links``: ``index``, ``host``, ``ipynb`` (relative hrefs), ``took`` (text);
    ``saved``: a saved plan's section (opslib.records.plan_pages), shown before the result."""
    title = f"#{run_id} {header.get('runbook')} on {header.get('host')}"
    body = [f"<h1>{esc(title)}: {status_cell(str(header.get('status')))}</h1>"]
    body.append(_header_html(header, links))
    if error:
        body.append(f'<pre class="error">{esc(error)}</pre>')
    if saved:
        body.append(saved)
    body.append('<h2 id="result">Result</h2>')
    body += [result_html(r) for r in results] or ["<p><i>(no structured result)</i></p>"]
    body.append(since)
    body.append(cells_html(nb))
    nav = [("all records", links["index"]), (f"host {header.get('host')}", links["host"])]
    return page(title, "\n".join(body), nav=nav)
