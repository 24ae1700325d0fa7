"""The records site (``records html``) and search (``records search``), without a browser:
incremental pages, what a record page and a host page say, no secret in any file of
the site, and the FTS5 search the CLI and the site share."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from support import records_cli

from opslib.records import notebook_json
from opslib.records import search as record_search
from opslib.records import site as record_site
from opslib.records.notebook_json import RESULT_MIME
from opslib.records.store import Store

MAC = "52:54:00:0b:00:02"


def result(checks: dict[str, str], addresses: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "kind": "result",
        "runbook": "find-vm-ip",
        "host": "lab",
        "status": "ok",
        "changed": False,
        "failed": any(s == "fail" for s in checks.values()),
        "summary": f"{len(addresses)} address(es)",
        "changes": [],
        "checks": [
            {"name": n, "status": s, "seen": "seen it", "fix": ""} for n, s in checks.items()
        ],
        "steps": [
            {"name": "probe", "started": 0.0, "seconds": 1.25, "ok": True, "detail": "pinged"}
        ],
        "tables": {"addresses": addresses},
        "columns": {"addresses": ["vm", "mac", "family", "ip"]},
        "data": {},
    }


def notebook(res: dict[str, Any], *, leak: str = "") -> dict[str, Any]:
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {
                "cell_type": "code",
                "metadata": {"papermill": {"duration": 0.5}},
                "source": 'vm = "vm-nat2"',
                "outputs": [{"output_type": "stream", "name": "stdout", "text": f"hi {leak}\n"}],
                "execution_count": 1,
            },
            {
                "cell_type": "code",
                "metadata": {},
                "source": "rb.report(x)",
                "outputs": [
                    {
                        "output_type": "display_data",
                        "metadata": {},
                        "data": {"text/plain": "the result", RESULT_MIME: res},
                    }
                ],
                "execution_count": 2,
            },
        ],
    }


def header(start: str, **kw: Any) -> dict[str, Any]:
    base = {
        "runbook": "find-vm-ip",
        "host": "lab",
        "parameters": {"host": "lab", "vm": ""},
        "user": "operator",
        "start": start,
        "end": start.replace(":00Z", ":09Z"),
        "status": "ok",
        "exit_code": 0,
        "changed": False,
        "summary": "2 VM(s)",
        "opslib_version": "0.1.0",
        "revision": "abc123",
        "mode": "headless",
        "pid": 1,
    }
    return {**base, **kw}


ADDR = [
    {"vm": "vm-nat1", "mac": "52:54:00:0b:00:01", "family": "ipv4", "ip": "192.0.2.11"},
    {"vm": "vm-nat2", "mac": MAC, "family": "ipv6", "ip": "2001:db8:2:0:5054:ff:fe0b:2"},
]


def filled(root: Path) -> tuple[Store, list[Path]]:
    """Two find-vm-ip runs on lab (a check fails in the second) and a host-health on d1."""
    store = Store(root)
    paths = [
        store.add(header("2024-05-01T10:00:00Z"), notebook(result({"guest up": "ok"}, ADDR[:1])))[
            1
        ],
        store.add(
            header("2024-05-01T11:00:00Z", status="failed", exit_code=1),
            notebook(result({"guest up": "fail"}, ADDR)),
        )[1],
        store.add(
            header("2024-05-01T12:00:00Z", runbook="host-health", host="d1"),
            notebook({**result({"bridge up": "ok"}, []), "runbook": "host-health"}),
        )[1],
    ]
    return store, paths


def page_mtimes(paths: list[Path]) -> list[int]:
    return [p.with_suffix(".html").stat().st_mtime_ns for p in paths]


def test_a_second_build_renders_nothing_and_a_newer_renderer_renders_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, paths = filled(tmp_path / "records")
    stamp = tmp_path / "renderer.py"
    stamp.write_text("# the renderer\n")
    os.utime(stamp, ns=(1, 1))  # older than any page
    monkeypatch.setattr(record_site, "RENDERER_FILES", (stamp,))
    first = record_site.build(store)
    assert (first.runs, first.rendered, first.hosts) == (3, 3, 2)
    made = page_mtimes(paths)

    again = record_site.build(store)
    assert again.rendered == 0
    assert page_mtimes(paths) == made

    # one new record: only its page is rendered
    _, new = store.add(header("2024-05-01T13:00:00Z"), notebook(result({}, ADDR)))
    assert record_site.build(store).rendered == 1
    assert new.with_suffix(".html").exists() and page_mtimes(paths) == made

    # a record rewritten after its page (a killed run promoted): that page again
    later = paths[0].with_suffix(".html").stat().st_mtime_ns + 10**9
    os.utime(paths[0], ns=(later, later))
    assert record_site.build(store).rendered == 1

    # the renderer's code newer than the pages: every page again
    future = max(page_mtimes([*paths, new])) + 10**9
    os.utime(stamp, ns=(future, future))
    assert record_site.build(store).rendered == 4


def test_the_command_says_how_many_pages_it_rendered(tmp_path: Path) -> None:
    filled(tmp_path)
    argv = [sys.executable, "-m", "opslib.cli.main", "records", "--records", str(tmp_path), "html"]
    first = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "3 runs: 3 record pages rendered, 2 host pages" in first.stdout
    second = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert "3 runs: 0 record pages rendered" in second.stdout


def hrefs(page: Path) -> list[str]:
    found = re.findall(r'(?:href|src)="([^"#]+)"', page.read_text())
    return [h for h in found if "${" not in h]  # not the index script's row template


def test_a_record_page_leads_with_the_result_and_says_what_changed_since_the_last_run(
    tmp_path: Path,
) -> None:
    store, paths = filled(tmp_path)
    record_site.build(store)
    second = paths[1].with_suffix(".html").read_text()
    for field in ("find-vm-ip", "operator", "2024-05-01T11:00:00Z", "failed", "abc123", "0.1.0"):
        assert field in second
    # the result (checks, steps with their times, tables) before the executed cells
    assert second.index("<h5>Checks</h5>") < second.index('id="since"') < second.index('id="cells"')
    assert "1.25" in second and MAC in second and "<details" in second
    since = second[second.index('id="since"') : second.index('id="cells"')]
    assert "guest up" in since and "ok" in since and "fail" in since
    first = paths[0].with_suffix(".html").read_text()
    assert "The first run of this runbook on this host" in first
    # every link of every page resolves to a file of the site
    pages = [*(p.with_suffix(".html") for p in paths), tmp_path / "index.html"]
    pages += [tmp_path / "lab" / "index.html", tmp_path / "d1" / "index.html"]
    for page in pages:
        for href in hrefs(page):
            assert (page.parent / href).is_file(), f"{page}: {href}"
    index = (tmp_path / "index.html").read_text()
    assert 'href="lab/2024/05/01/110000Z-find-vm-ip.html"' in index
    assert 'href="lab/index.html"' in index


def test_a_host_page_shows_each_runbooks_latest_run_and_the_checks_failing_now(
    tmp_path: Path,
) -> None:
    store, _ = filled(tmp_path)
    record_site.build(store)
    lab = (tmp_path / "lab" / "index.html").read_text()
    latest = lab[lab.index('id="latest-runs"') : lab.index('id="failing"')]
    assert "#2" in latest and "#1<" not in latest  # find-vm-ip's latest run only
    failing = lab[lab.index('id="failing-checks"') :]
    assert "guest up" in failing
    d1 = (tmp_path / "d1" / "index.html").read_text()
    assert "None: every runbook's latest run passed its checks." in d1


def test_no_secret_value_reaches_a_page_the_index_or_the_search(tmp_path: Path) -> None:
    token = "cf-TOKEN-value-123456"
    store = Store(tmp_path)
    nb = notebook(result({}, ADDR), leak=token)  # a cell printed the token
    h = header("2024-05-01T10:00:00Z", parameters={"host": "lab", "api_token": "env:CF_TOKEN"})
    nb, h, leaked = notebook_json.redact_leaks(
        nb, h, [token]
    )  # what the runner does before writing
    assert leaked
    store.add(h, nb)
    record_site.build(store)
    site = [p for p in tmp_path.rglob("*") if p.suffix in (".html", ".js")]
    assert len(site) == 4  # the page, the host page, the index, its data
    for p in site:
        assert token not in p.read_text(), p
    page = next(tmp_path.glob("lab/2024/**/*.html")).read_text()
    assert "secret from env:CF_TOKEN" in page and "leaked-secret" in page
    assert record_search.search(store, token[:10]) == []


def search_cli(root: Path, *words: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "opslib.cli.main", "records", "--records", str(root), "search"]
    return subprocess.run([*argv, *words], capture_output=True, text=True, timeout=60)


def test_search_finds_runs_by_mac_address_vm_and_check(tmp_path: Path) -> None:
    store, _ = filled(tmp_path)
    assert [h.id for h in record_search.search(store, MAC)] == [2]
    assert [h.id for h in record_search.search(store, "VM-NAT2 2001:db8:2")] == [2]
    assert [h.id for h in record_search.search(store, "vm-nat1")] == [2, 1]  # newest first
    assert [h.id for h in record_search.search(store, "bridge up")] == [3]
    assert [h.id for h in record_search.search(store, "d1")] == [3]  # shorter than a trigram
    assert record_search.search(store, "vm-nat9") == []
    [hit] = record_search.search(store, MAC)
    assert MAC in hit.snippet and "vm-nat2" in hit.snippet

    done = search_cli(tmp_path, MAC)
    assert done.returncode == 0, done.stderr
    assert re.search(rf"^2 .*find-vm-ip +lab +failed .*{MAC}", done.stdout, re.M), done.stdout
    empty = search_cli(tmp_path, " ")
    assert empty.returncode == 2 and "give the text to look for" in empty.stderr

    # the static site's search data holds the same text
    record_site.build(store)
    data = (tmp_path / "site.js").read_text()
    site = json.loads(data.removeprefix("window.OPSBOOK_SITE = ").rstrip().rstrip(";"))
    texts = {run[0]: run[-1] for run in site["runs"]}
    assert MAC in texts[2] and MAC not in texts[1]


def test_search_survives_reindex_and_catches_up_an_index_without_it(tmp_path: Path) -> None:
    store, _ = filled(tmp_path)
    assert store.reindex() == 3
    assert [h.id for h in record_search.search(store, MAC)] == [2]
    con = sqlite3.connect(store.index_path)  # an index from before the search table
    con.execute("DROP TABLE search")
    con.commit()
    con.close()
    assert [h.id for h in record_search.search(store, MAC)] == [2]


def test_a_plan_shows_each_change_with_its_diff() -> None:
    from opslib.core.changes import Change, Plan
    from opslib.records import render

    change = Change("file:/etc/network/interfaces", "update", "br0 takes eth0", "a\n", "b\n")
    html = render.result_html(Plan("forward-bridge", "lab", (change,)).to_json())
    assert "<h4>Plan for forward-bridge on lab: 1 change</h4>" in html
    assert "<code>file:/etc/network/interfaces</code>: br0 takes eth0" in html
    assert '<span class="del" style="color:#cf222e">-a</span>' in html
    assert '<span class="add" style="color:#1a7f37">+b</span>' in html


def test_an_index_written_elsewhere_links_back_into_the_store(tmp_path: Path) -> None:
    store, _ = filled(tmp_path / "records")
    out = tmp_path / "site" / "all.html"
    out.parent.mkdir()
    record_site.build(store, out)
    assert (tmp_path / "site" / "site.js").is_file()
    links = hrefs(out)
    assert "../records/lab/2024/05/01/110000Z-find-vm-ip.html" in links
    for href in links:
        assert (out.parent / href).is_file(), href
    page = tmp_path / "records/lab/2024/05/01/110000Z-find-vm-ip.html"
    assert "../../../../../site/all.html" in hrefs(page)


class _Fetches(HTMLParser):
    """What a browser would fetch from elsewhere when it opens a page."""

    TAGS = ("script", "link", "iframe", "img", "source", "embed", "object", "audio", "video")

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_script = tag == "script"
        if tag in self.TAGS:
            for name, value in attrs:
                if name in ("src", "href", "data", "srcset") and re.match(
                    r"\s*(https?:)?//", value or "", re.I
                ):
                    self.found.append(f"<{tag} {name}={value}>")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and re.search(r"https?://", data):  # import("https://...")
            self.found.append(f"<script>{data.strip()[:80]}")


def fetches(html: str) -> list[str]:
    parser = _Fetches()
    parser.feed(html)
    return parser.found


def rich_notebook() -> dict[str, Any]:
    """A record with what papermill files: markdown with math, a widget, JavaScript."""
    nb = notebook(result({"guest up": "ok"}, ADDR))
    widget = {"model_id": "m1", "version_major": 2, "version_minor": 0}
    nb["metadata"]["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {
            "state": {"m1": {"model_name": "ButtonModel", "state": {}}},
            "version_major": 2,
            "version_minor": 0,
        }
    }
    nb["cells"] += [
        {"cell_type": "markdown", "metadata": {}, "source": "Prefix math: $2^{64}$ addresses"},
        {
            "cell_type": "code",
            "metadata": {},
            "source": "rb.confirm()",
            "execution_count": 3,
            "outputs": [
                {
                    "output_type": "display_data",
                    "metadata": {},
                    "data": {
                        "application/vnd.jupyter.widget-view+json": widget,
                        "text/plain": "Button(description='apply these changes')",
                    },
                },
                {
                    "output_type": "display_data",
                    "metadata": {},
                    "data": {
                        "application/javascript": "console.log('js output')",
                        "text/plain": "<IPython.core.display.Javascript object>",
                    },
                },
                {
                    "output_type": "display_data",
                    "metadata": {},
                    "data": {
                        "text/html": "<table><tr><td>vm-nat2 html row</td></tr></table>",
                        "text/plain": "vm-nat2 text row",
                    },
                },
            ],
        },
    ]
    return nb


def test_every_page_opsbook_writes_fetches_nothing_from_the_network(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.add(header("2024-05-01T10:00:00Z"), rich_notebook())
    store.add(header("2024-05-01T11:00:00Z"), rich_notebook())
    record_site.build(store)
    argv = [sys.executable, "-m", "opslib.cli.main", "records", "--records", str(tmp_path)]
    show = subprocess.run(
        [*argv, "show", "2", "--html"], capture_output=True, text=True, timeout=120
    )
    assert show.returncode == 0 and show.stderr == "", show.stderr
    shown = Path(show.stdout.strip()).resolve()
    pages = sorted(tmp_path.rglob("*.html"))
    assert shown in pages and len(pages) == 5  # 2 record pages, a host page, index, show
    for page in pages:
        assert fetches(page.read_text()) == [], page
    html = shown.read_text()
    # the notebook's outputs are all there, each in the form that needs no script
    assert "vm-nat2 html row" in html and "the result" in html and "hi \n" in html
    assert "Prefix math: $2^{64}$ addresses" in html
    assert "<pre>Button(description='apply these changes')</pre>" in html
    assert "&lt;IPython.core.display.Javascript object&gt;" in html
    assert "default-src 'none'" in html  # nor does what an output's own HTML names


@pytest.mark.parametrize(
    ("command", "target", "message"),
    [
        (["html"], "missing/index.html", "no directory {d}/missing; make it first: mkdir -p"),
        (["html"], "afile/index.html", "{d}/afile is a file, not a directory"),
        (["html"], "adir", "is a directory; give the file to write in it"),
        (["show", "1", "--html"], "missing/1.html", "no directory {d}/missing; make it first"),
    ],
)
def test_an_html_target_that_cannot_be_written_is_refused_before_any_page(
    tmp_path: Path, command: list[str], target: str, message: str
) -> None:
    filled(tmp_path / "records")
    (tmp_path / "afile").write_text("kept\n")
    (tmp_path / "adir").mkdir()
    before = sorted(tmp_path.rglob("*"))
    done = records_cli(tmp_path / "records", *command, "-o", str(tmp_path / target))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    [line] = done.stderr.splitlines()
    assert f"-o {tmp_path / target}: " in line and message.format(d=tmp_path) in line, line
    assert sorted(tmp_path.rglob("*")) == before  # no record page, no index, no directory
    assert (tmp_path / "afile").read_text() == "kept\n"


@pytest.mark.parametrize(
    ("command", "out"), [(["html"], "3 runs: 3 record pages"), (["search", "vm-nat1"], "2  ")]
)
def test_a_file_in_the_store_that_is_not_a_record_is_named_in_one_warning(
    tmp_path: Path, command: list[str], out: str
) -> None:
    filled(tmp_path)
    (tmp_path / "lab/2024/05/01/130000Z-find-vm-ip.ipynb").write_bytes(b"{garbage")
    (tmp_path / "d1/stray.ipynb").write_text('{"cells": [], "metadata": {}}')  # no header
    done = records_cli(tmp_path, *command)
    assert done.returncode == 0, done.stderr
    [warning] = done.stderr.splitlines()
    assert warning.startswith("opsbook: warning: 2 files in the store are not a record notebook")
    assert "lab/2024/05/01/130000Z-find-vm-ip.ipynb" in warning and "d1/stray.ipynb" in warning
    assert out in done.stdout  # the records themselves are there as before


# The index page's scripts (site.js and the inline one) run in node against the least
# DOM they touch: what they draw for the search a URL carries.
_DOM = """
const vm = require("vm"), fs = require("fs");
const [siteJs, inline, hash] = JSON.parse(fs.readFileSync(0, "utf8"));
const els = {};
const el = id => els[id] ??= {value: "", textContent: "", hidden: false,
  tBodies: [{innerHTML: "", rows: {length: 0}}]};
const box = {window: {}, document: {getElementById: el},
  location: {hash, pathname: "/index.html"}, history: {replaceState() {}}};
vm.runInNewContext(siteJs + "\\n" + inline, box);
const body = el("runs").tBodies[0].innerHTML;
console.log(JSON.stringify({search: el("search").value, count: el("count").textContent,
  ids: [...body.matchAll(/data-id="(\\d+)"/g)].map(m => Number(m[1]))}));
"""


def index_scripts(root: Path) -> tuple[str, str]:
    index = (root / "index.html").read_text()
    inline = re.findall(r"<script>(.*?)</script>", index, re.S)
    assert len(inline) == 1
    return (root / "site.js").read_text(), inline[0]


@pytest.mark.parametrize(
    ("hash_", "search", "ids"),
    [
        ("#q=vm-nat2", "vm-nat2", [2]),
        ("#q=52%3A54%3A00%3A0b%3A00%3A01", "52:54:00:0b:00:01", [2, 1]),
        ("#q=%E0%A4%A", "%E0%A4%A", []),  # cut inside a character: taken as it is
        ("#q=100%", "100%", []),
    ],
)
def test_the_index_applies_the_search_its_url_carries_even_when_malformed(
    tmp_path: Path, hash_: str, search: str, ids: list[int]
) -> None:
    store, _ = filled(tmp_path)
    record_site.build(store)
    stdin = json.dumps([*index_scripts(tmp_path), hash_])
    done = subprocess.run(
        ["node", "-e", _DOM], input=stdin, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr  # an uncaught error stops the page's script
    drawn = json.loads(done.stdout)
    assert drawn == {"search": search, "count": f"{len(ids)} of 3 runs match", "ids": ids}
