"""`opsbook run` end to end on real kernels, with the fixture runbook tests/notebooks/engine-demo.

The kernel runs are started together by one module fixture (each costs a kernel
start); the tests then read what they left: exit codes, records, index rows.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from support import REPO_NOTEBOOKS, eventually, finish, opsbook, partial_cell_running

SECRET = "s3cr3t-T0KEN/for+the=engine-tests"  # mixed case, and characters a URL quotes


def secret_forms(secret: str) -> set[str]:
    """The secret as a test looks for it, lowercased: as read, URL-quoted, JSON-escaped."""
    forms = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret)}
    forms |= {json.dumps(f)[1:-1] for f in forms}
    return {f.lower() for f in forms}


def holds_secret(text: str, secret: str = SECRET) -> bool:
    """Whether ``text`` holds the secret in any case form (or quoted, or escaped)."""
    return any(form in text.lower() for form in secret_forms(secret))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    store = tmp_path_factory.mktemp("records")
    secret_file = tmp_path_factory.mktemp("secret") / "token"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    release = tmp_path_factory.mktemp("release") / "go"
    tok = f"file:{secret_file}"
    procs = {
        "ok": opsbook(
            "run",
            "engine-demo",
            "--host",
            "h-ok",
            "-p",
            "label",
            "010",
            "-p",
            "count",
            "3",
            "-p",
            "apply",
            "yes",
            "-p",
            "token",
            tok,
            store=store,
        ),
        "fail": opsbook(
            "run", "engine-demo", "--host", "h-fail", "-p", "mode", "fail", store=store
        ),
        # no host: filed under this machine's name; --summary: as a scheduled run prints
        "here": opsbook("run", "engine-demo", "-p", "host", "", "--summary", store=store),
        "leak": opsbook(
            "run",
            "engine-demo",
            "--host",
            "h-leak",
            "-p",
            "mode",
            "leak",
            "-p",
            "token",
            tok,
            store=store,
        ),
        "killed": opsbook(
            "run", "engine-demo", "--host", "h-kill", "-p", "mode", "sleep", store=store
        ),
        "timeout": opsbook(
            "run",
            "engine-demo",
            "--host",
            "h-timeout",
            "-p",
            "mode",
            "sleep",
            "--timeout",
            "3",
            store=store,
        ),
        "holder": opsbook(
            "run",
            "engine-demo",
            "--host",
            "h-lock",
            "-p",
            "apply",
            "true",
            "-p",
            "hold",
            "90",
            "-p",
            "release",
            str(release),
            store=store,
        ),
    }
    try:
        # The killed run: SIGKILL the runner while its plan cell runs.
        eventually(
            lambda: partial_cell_running(store, "h-kill", "plan = rb.plan(plan_fn)"),
            timeout=300,
            what="h-kill running its plan cell",
        )
        procs["killed"].send_signal(signal.SIGKILL)
        # The lock: a second apply on h-lock while the first one holds the lock.
        lock_file = store / "locks" / "h-lock.lock"
        eventually(
            lambda: lock_file.exists() and lock_file.stat().st_size > 0,
            timeout=300,
            what="the apply lock taken",
        )
        waiter = finish(
            opsbook(
                "run",
                "engine-demo",
                "--host",
                "h-lock",
                "-p",
                "apply",
                "true",
                "--lock-wait",
                "1",
                store=store,
            )
        )
        release.touch()
        done = {name: finish(p) for name, p in procs.items()}
    finally:
        for p in procs.values():  # only the runs this fixture started
            if p.poll() is None:
                p.terminate()
                p.wait(30)
    yield {"store": store, "waiter": waiter, "holder_pid": procs["holder"].pid, **done}


def index_rows(store: Path) -> dict[int, dict[str, object]]:
    con = sqlite3.connect(store / "index.sqlite")
    con.row_factory = sqlite3.Row
    try:
        return {r["id"]: dict(r) for r in con.execute("SELECT * FROM runs")}
    finally:
        con.close()


def test_ok_run_files_record_and_index_row_with_typed_parameters(runs: dict) -> None:
    ok = runs["ok"]
    assert ok.rc == 0, ok.err
    assert "[5/5] rb.apply(apply_fn, plan)" in ok.err  # one progress line per code cell
    # the parameter cells by name, not their first line cut inside its comment
    assert "[1/5] parameters          " in ok.err
    assert "[2/5] injected-parameters " in ok.err
    assert 'host = "testhost"' not in ok.err
    assert ok.record.is_file() and ok.record.parent.parent.parent.parent.name == "h-ok"
    assert ok.record.name.endswith("Z-engine-demo.ipynb")
    nb = json.loads(ok.record.read_text())
    injected = next(c for c in nb["cells"] if "injected-parameters" in c["metadata"]["tags"])
    assert 'label = "010"' in "".join(injected["source"])  # a str stays a str
    assert "count = 3\n" in "".join(injected["source"])
    result = [
        o["data"]["application/vnd.opsbook.result+json"]
        for c in nb["cells"]
        for o in c.get("outputs", [])
        if "application/vnd.opsbook.result+json" in o.get("data", {})
    ][-1]
    assert result["status"] == "changed" and len(result["changes"]) == 3
    assert result["data"] == {"label": "010", "count_type": "int"}
    row = index_rows(runs["store"])[ok.run_id]
    assert row["status"] == "ok" and row["exit_code"] == 0 and row["changed"] == 1
    assert row["runbook"] == "engine-demo" and row["host"] == "h-ok"
    assert json.loads(row["parameters"])["label"] == "010"
    assert row["summary"] == "3 changes applied"
    import hashlib

    assert row["sha256"] == hashlib.sha256(ok.record.read_bytes()).hexdigest()


def test_a_headless_run_prints_its_results_then_the_summary_and_the_record(runs: dict) -> None:
    out = runs["ok"].out
    # what `records show` prints: the plan, then the result with its changes and checks
    assert "Plan for engine-demo on h-ok: 3 changes\n  update file:/etc/fixture0" in out
    assert "engine-demo on h-ok: changed: 3 changes applied\nChanges:\n" in out
    assert out.index("Checks:\n  NAME     STATUS  SEEN\n  fixture  ok      as planned") < (
        out.index("ok (changed): 3 changes applied\nrecord #")
    )
    assert "[5/5]" not in out  # progress stays on stderr


def test_a_run_without_host_is_filed_under_this_machine_and_summary_prints_one_line(
    runs: dict,
) -> None:
    import socket

    here = runs["here"]
    assert here.rc == 0 and here.err == "", here.err
    (line,) = here.out.splitlines()
    assert line.startswith("ok (no change): plan only: 2 changes not applied  (record #")
    run_id = int(line.split("record #", 1)[1].split(":")[0])
    row = index_rows(runs["store"])[run_id]
    assert row["host"] == socket.gethostname() == json.loads(row["parameters"])["host"]
    assert f"/{socket.gethostname()}/" in line


def test_secret_read_from_file_appears_nowhere_in_the_record(runs: dict) -> None:
    ok = runs["ok"]
    assert SECRET.encode() not in ok.record.read_bytes()
    assert SECRET not in ok.out + ok.err
    assert not list((runs["store"] / "h-ok").rglob(".*.partial.ipynb"))


def test_leaked_secret_is_redacted_and_fails_the_run(runs: dict) -> None:
    leak = runs["leak"]
    assert leak.rc == 1
    data = leak.record.read_bytes()
    assert SECRET.encode() not in data and b"[secret redacted]" in data
    row = index_rows(runs["store"])[leak.run_id]
    assert row["status"] == "leaked-secret" and row["exit_code"] == 1


def test_a_leaked_secret_is_redacted_in_every_case_and_quoted_form_everywhere(
    runs: dict, tmp_path: Path
) -> None:
    # The leak run printed the token as read, lowercased, uppercased and URL-quoted, and
    # planned a DNS name made from it lowercased (as cloudflare-aaaa's record_name is).
    leak, store = runs["leak"], runs["store"]
    assert leak.rc == 1
    assert "create dns:[secret redacted].example.org" in leak.out  # the plan, shown
    assert not holds_secret(leak.out + leak.err)
    # the record pages, host pages, index.html, site.js; the FTS index searched
    site = finish(opsbook("records", "html", "-o", str(store / "index.html"), store=store))
    assert site.rc == 0, site.err
    search = finish(opsbook("records", "search", "example.org", store=store))
    assert search.rc == 0 and "[secret redacted]" in search.out
    assert not holds_secret(site.out + site.err + search.out + search.err)
    files = [p for p in store.rglob("*") if p.is_file()]
    assert any(p.name == "site.js" for p in files)
    holding = [p for p in files if holds_secret(p.read_bytes().decode("utf-8", "replace"))]
    assert holding == []


def test_failing_cell_exits_1_and_keeps_record_with_papermill_banner(runs: dict) -> None:
    fail = runs["fail"]
    assert fail.rc == 1
    assert "RuntimeError: the fixture failed on purpose" in fail.err
    nb = json.loads(fail.record.read_text())
    assert "papermill-error-cell-tag" in nb["cells"][0]["metadata"]["tags"]
    assert nb["metadata"]["opsbook"]["status"] == "failed"
    row = index_rows(runs["store"])[fail.run_id]
    assert (row["status"], row["exit_code"]) == ("failed", 1)


def test_second_concurrent_apply_reports_the_lock_holder(runs: dict) -> None:
    waiter, holder = runs["waiter"], runs["holder"]
    assert holder.rc == 0, holder.err
    assert waiter.rc == 1
    assert f"apply lock held by pid {runs['holder_pid']} (engine-demo" in waiter.err
    row = index_rows(runs["store"])[waiter.run_id]
    assert (row["status"] == "locked" and row["changed"] is None) or row["changed"] == 0


def test_killed_run_leaves_its_record_marked_killed(runs: dict) -> None:
    assert runs["killed"].rc == -signal.SIGKILL
    store = runs["store"]
    listing = finish(opsbook("records", "--status", "killed", store=store))
    assert listing.rc == 0 and "h-kill" in listing.out
    assert "the run died during: plan = rb.plan(plan_fn)" in listing.out
    (record,) = (store / "h-kill").rglob("*.ipynb")
    nb = json.loads(record.read_text())
    assert nb["metadata"]["opsbook"]["status"] == "killed"
    # What ran before the kill is kept: the parameters cell executed.
    assert any(
        c.get("metadata", {}).get("papermill", {}).get("status") == "completed" for c in nb["cells"]
    )


def test_cell_over_the_time_limit_ends_the_run_as_timeout(runs: dict) -> None:
    done = runs["timeout"]
    assert done.rc == 1
    row = index_rows(runs["store"])[done.run_id]
    assert row["status"] == "timeout"
    assert row["summary"] == "a cell ran longer than 3 s: plan = rb.plan(plan_fn)"
    assert done.record.is_file()


def test_reindex_reproduces_the_index(runs: dict) -> None:
    store = runs["store"]
    finish(opsbook("records", store=store))  # settles stale rows first
    before = index_rows(store)
    done = finish(opsbook("records", "reindex", store=store))
    assert done.rc == 0 and f"indexed {len(before)} records" in done.out
    assert index_rows(store) == before


def test_records_listing_show_and_diff(runs: dict) -> None:
    store = runs["store"]
    listing = finish(
        opsbook("records", "--runbook", "engine-demo", "--status", "failed", store=store)
    )
    lines = listing.out.splitlines()
    assert lines[0].split() == [
        "ID",
        "START",
        "(UTC)",
        "RUNBOOK",
        "HOST",
        "STATUS",
        "CHANGED",
        "TOOK",
        "SUMMARY",
    ]
    assert len(lines) == 2 and "h-fail" in lines[1]
    show = finish(opsbook("records", "show", str(runs["ok"].run_id), store=store))
    assert show.rc == 0 and "status:  ok (exit 0)" in show.out and "Checks:" in show.out
    diff = finish(
        opsbook("records", "diff", str(runs["fail"].run_id), str(runs["ok"].run_id), store=store)
    )
    assert '~ status: "failed" -> "ok"' in diff.out
    assert "~ parameter count: 2 -> 3" in diff.out
    assert "+ change update file:/etc/fixture2: line 2 to 010" in diff.out
    html = finish(opsbook("records", "show", str(runs["ok"].run_id), "--html", store=store))
    assert html.rc == 0 and Path(html.out.strip()).resolve().read_text().startswith("<!DOCTYPE")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "cuont", "3"], "no parameter named 'cuont'; did you mean count?"),
        (["-p", "count", "three"], "parameter count (int): 'three' is not an integer"),
        (["-p", "mode", "loud"], "'loud' is not one of plan, fail, sleep, leak, badcheck"),
        (["-p", "token", SECRET], "a secret parameter names a source, never a value"),
        (["-p", "token", "file:/nonexistent/token"], "file:/nonexistent/token: no such file"),
        (["--host", "bad host"], "'bad host' is not a host name"),
        (["--timeout", "-1"], "--timeout -1: give a number of seconds greater than 0"),
        (["--timeout", "nan"], "--timeout nan: give a number of seconds greater than 0"),
        (["--timeout", "soon"], "--timeout 'soon': give a number of seconds greater than 0"),
        (["--lock-wait", "-5"], "--lock-wait -5: give a number of seconds, 0 or more"),
        (["--period", "0", "--metrics-dir", "/tmp"], "--period 0: give a number of seconds"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_record(
    tmp_path: Path, args: list[str], message: str
) -> None:
    done = finish(opsbook("run", "engine-demo", *args, store=tmp_path))
    assert done.rc == 2
    assert done.err.count("\n") == 1 and message in done.err
    assert SECRET not in done.err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("runbook", "args", "named"),
    [
        ("engine-demo", ["-p", "label", f"x-{SECRET.lower()}"], "parameter label"),
        ("engine-demo", ["-p", "label", quote(SECRET, safe="")], "parameter label"),
        ("engine-demo", ["--host", SECRET.upper()], "--host"),
        # the case: the Cloudflare token inside the record name (a DNS name)
        (
            str(REPO_NOTEBOOKS / "cloudflare-aaaa.ipynb"),
            ["-p", "record_name", f"{SECRET.lower()}.example.org", "-p", "address", "2001:db8::1"],
            "parameter record_name",
        ),
    ],
)
def test_a_parameter_holding_a_secrets_value_is_refused_before_the_kernel_starts(
    tmp_path: Path, runbook: str, args: list[str], named: str
) -> None:
    token = tmp_path / "token"
    token.write_text(SECRET + "\n")
    token.chmod(0o600)
    store = tmp_path / "records"
    done = finish(opsbook("run", runbook, *args, "-p", "token", f"file:{token}", store=store))
    assert (done.rc, done.out) == (2, ""), done.err
    assert done.err.count("\n") == 1 and named in done.err
    assert f"holds the value of secret parameter token (file:{token})" in done.err
    assert not holds_secret(done.err)
    assert not store.exists()  # nothing ran, nothing filed


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"host: h1\nlabel: caf\xe9\n", ": not UTF-8 text (byte 0xe9 at line 2); save it as UTF-8"),
        (
            b"host: h1\nlabel: a\nlabel: b\n",
            " line 3: label is given twice (first on line 2); keep one",
        ),
    ],
)
def test_a_bad_parameter_file_is_one_line_before_the_kernel_starts(
    tmp_path: Path, content: bytes, message: str
) -> None:
    params = tmp_path / "set.yaml"
    params.write_bytes(content)
    store = tmp_path / "records"
    done = finish(opsbook("run", "engine-demo", "-f", str(params), store=store))
    assert (done.rc, done.out) == (2, "")
    assert done.err.splitlines() == [f"opsbook: {params}{message}"]
    assert not store.exists()


def test_procedure_raising_input_error_exits_2_with_its_message_and_keeps_the_record(
    tmp_path: Path,
) -> None:
    done = finish(opsbook("run", "rejects-input", "-q", "--host", "h-bad", store=tmp_path))
    message = "vm 'vm-missing' is not defined on h-bad; give one of: vm-a, vm-b"
    assert done.rc == 2, done.err
    assert done.err.splitlines() == [f"bad-input: {message}"]  # one line: the message
    assert "Traceback" not in done.err and "InputError" not in done.err
    nb = json.loads(done.record.read_text())  # the kernel ran: the record is kept
    header = nb["metadata"]["opsbook"]
    assert (header["status"], header["exit_code"], header["summary"]) == ("bad-input", 2, message)
    row = index_rows(tmp_path)[done.run_id]
    assert (row["status"], row["exit_code"], row["summary"]) == ("bad-input", 2, message)
    listing = finish(opsbook("records", "--status", "bad-input", store=tmp_path))
    assert listing.rc == 0 and "h-bad" in listing.out


def test_error_exit_codes_come_from_the_opslib_error_tree() -> None:
    from opslib.engine.run_cells import error_exit_code

    for name in ("InputError", "UnknownName", "HostError", "Unsupported", "SecretError"):
        assert error_exit_code(name) == 2, name
    for name in ("OpsError", "ApplyError", "LockHeld", "LibvirtError", "RuntimeError", "Path"):
        assert error_exit_code(name) == 1, name


def test_unknown_runbook_suggests_names(tmp_path: Path) -> None:
    done = finish(opsbook("run", "engine-dem", store=tmp_path))
    assert done.rc == 2 and "no runbook named 'engine-dem'; did you mean engine-demo?" in done.err


def test_runbooks_lists_purpose_and_parameters_as_a_table(tmp_path: Path) -> None:
    done = finish(opsbook("runbooks", store=tmp_path))
    lines = done.out.splitlines()
    assert lines[0] == "engine-demo  A fixture runbook for the engine tests."
    assert lines[1].split() == ["NAME", "TYPE", "DEFAULT", "HELP"]
    label = next(ln for ln in lines if ln.strip().startswith("label"))
    assert label.split()[:3] == ["label", "str", '"010"']
    assert lines[1].index("TYPE") == label.index("str")  # aligned columns


def test_records_review_notebook_runs_headless_over_a_store(runs: dict, tmp_path: Path) -> None:
    review = REPO_NOTEBOOKS / "records-review.ipynb"
    done = finish(
        opsbook(
            "run",
            str(review),
            "-p",
            "records_dir",
            str(runs["store"]),
            "-p",
            "status_filter",
            "failed",
            "--records",
            str(tmp_path),
            store=tmp_path,
        )
    )
    assert done.rc == 0, done.err
    nb = json.loads(done.record.read_text())
    (result,) = [
        o["data"]["application/vnd.opsbook.result+json"]
        for c in nb["cells"]
        for o in c.get("outputs", [])
        if "application/vnd.opsbook.result+json" in o.get("data", {})
    ]
    assert [r["host"] for r in result["tables"]["runs"]] == ["h-fail"]
    assert "failures by runbook:\n  RUNBOOK      RUNS  NOT OK\n  engine-demo  1     1" in done.out
    assert result["tables"]["failures by runbook"] == [
        {"runbook": "engine-demo", "runs": 1, "not ok": 1}
    ]
    html = next(
        o["data"]["text/html"]
        for c in nb["cells"]
        for o in c.get("outputs", [])
        if "application/vnd.opsbook.result+json" in o.get("data", {})
    )
    assert '<a href="' in "".join(html) and ".ipynb</a>" in "".join(html)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["-p", "deadline", "-5"],
            "parameter deadline (float[1..3600]): -5 is out of range; give a value from 1 to 3600",
        ),
        (["-p", "uplink", "eth0;reboot"], "parameter uplink (ifname): 'eth0;reboot' is not an"),
    ],
)
def test_ranges_and_interface_names_are_refused_before_the_kernel_starts(
    tmp_path: Path, args: list[str], message: str
) -> None:
    notebook = str(REPO_NOTEBOOKS / "forward-bridge.ipynb")
    done = finish(opsbook("run", notebook, *args, store=tmp_path))
    assert (done.rc, done.out) == (2, "")
    assert done.err.count("\n") == 1 and message in done.err
    assert not list(tmp_path.iterdir())  # nothing ran, nothing filed


def test_a_runbook_without_a_host_is_filed_under_this_machines_name() -> None:
    import socket

    from opslib.engine import runner

    info = runner.find_runbook(str(REPO_NOTEBOOKS / "network-inventory.ipynb"))
    prepared = runner.prepare(info)
    assert prepared.host == socket.gethostname() == prepared.values["host"]
    lab = REPO_NOTEBOOKS.parent / "parameters" / "lab" / "network-inventory.yaml"
    # the lab's booted host's name comes from its parameters
    assert runner.prepare(info, files=[lab]).host == "daemon1"
    assert runner.prepare(info, files=[lab], host="daemon-3").host == "daemon-3"
    for params_file in lab.parent.glob("*.yaml"):  # every lab set of a host runbook says so
        notebook = REPO_NOTEBOOKS / f"{params_file.stem}.ipynb"
        if notebook.is_file() and runner.find_runbook(str(notebook)).param("host"):
            assert runner.load_param_file(params_file).get("host") == "daemon1", params_file.name
