"""The record store: paths, index rows, stale runs, reindex, --since."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support import records_cli

from opslib import __version__
from opslib.core import secrets
from opslib.core.errors import InputError
from opslib.core.params import Param
from opslib.records import clock, notebook_json, run_index
from opslib.records import header as record_header
from opslib.records import store as records
from opslib.records.notebook_json import RESULT_MIME
from opslib.records.store import Store


def notebook(result: dict | None = None) -> dict:
    outputs = (
        [
            {
                "output_type": "display_data",
                "metadata": {},
                "data": {"text/plain": "x", RESULT_MIME: result},
            }
        ]
        if result
        else []
    )
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {
                "cell_type": "code",
                "metadata": {},
                "source": "rb.report(x)",
                "outputs": outputs,
                "execution_count": 1,
            }
        ],
    }


def header(**kw: object) -> dict:
    base = {
        "runbook": "host-health",
        "host": "lab",
        "parameters": {"host": "lab"},
        "user": "op",
        "start": "2024-05-01T10:00:00Z",
        "end": "2024-05-01T10:00:07Z",
        "status": "ok",
        "exit_code": 0,
        "changed": False,
        "summary": "all checks pass",
        "opslib_version": "0.1.0",
        "revision": "abc",
        "mode": "headless",
        "pid": 1,
    }
    return {**base, **kw}


def test_records_are_filed_by_host_and_utc_date(tmp_path: Path) -> None:
    store = Store(tmp_path)
    run_id, path = store.add(header(), notebook())
    assert path == tmp_path / "lab/2024/05/01/100000Z-host-health.ipynb"
    _, second = store.add(header(), notebook())
    assert second.name == "100000Z-host-health-2.ipynb"  # same second: never overwritten
    row = store.get(run_id)
    assert (row.status, row.changed, row.seconds, row.path) == (
        "ok",
        False,
        7,
        "lab/2024/05/01/100000Z-host-health.ipynb",
    )
    assert json.loads(path.read_text())["metadata"]["opsbook"]["id"] == run_id


def test_listing_filters_newest_first(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.add(header(start="2024-05-01T10:00:00Z"), notebook())
    store.add(header(start="2024-05-02T10:00:00Z", status="failed"), notebook())
    store.add(header(start="2024-05-03T10:00:00Z", runbook="find-vm-ip"), notebook())
    assert [r.start[:10] for r in store.list()] == ["2024-05-03", "2024-05-02", "2024-05-01"]
    assert [r.status for r in store.list(status="failed")] == ["failed"]
    assert len(store.list(runbook="host-health", since="2024-05-02T00:00:00Z")) == 1


def test_dead_running_row_becomes_killed_and_keeps_the_partial_notebook(tmp_path: Path) -> None:
    store = Store(tmp_path)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)  # a pid that has exited
    run_id, path = store.begin(header(status="running", end=None, pid=pid, summary=""), notebook())
    part = records.partial_path(path)
    executed = notebook({"kind": "plan", "changes": [], "runbook": "host-health", "host": "lab"})
    executed["cells"][0]["metadata"]["papermill"] = {"status": "running"}
    part.write_text(
        json.dumps(notebook_json.with_header(executed, header(status="running", summary="")))
    )
    assert store.mark_stale() == 1
    row = store.get(run_id)
    assert row.status == "killed" and row.summary == "the run died during: rb.report(x)"
    assert not part.exists()
    kept = json.loads(path.read_text())
    assert RESULT_MIME in kept["cells"][0]["outputs"][0]["data"]


def test_live_running_row_is_left_alone(tmp_path: Path) -> None:
    import os

    store = Store(tmp_path)
    run_id, _ = store.begin(header(status="running", pid=os.getpid()), notebook())
    assert store.mark_stale() == 0 and store.get(run_id).status == "running"


def test_reindex_rebuilds_rows_from_notebooks_with_the_same_ids(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for day in (1, 2, 3):
        store.add(header(start=f"2024-05-0{day}T10:00:00Z"), notebook())
    before = store.list()
    store.index_path.unlink()
    assert store.reindex() == 3
    assert store.list() == before


def test_get_unknown_id_is_bad_input(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.add(header(), notebook())
    with pytest.raises(InputError, match="no record with id 9; see `opsbook records`"):
        store.get(9)


def test_since_accepts_dates_times_and_relative_spans() -> None:
    now = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)
    assert clock.parse_since("3d", now=now) == "2024-05-07T12:00:00Z"
    assert clock.parse_since("90m", now=now) == "2024-05-10T10:30:00Z"
    assert clock.parse_since("2024-05-01", now=now) == "2024-05-01T00:00:00Z"
    with pytest.raises(InputError, match="--since 'yesterday'"):
        clock.parse_since("yesterday")


def test_final_result_prefers_the_last_result_over_plans() -> None:
    nb = notebook({"kind": "plan", "changes": [{}]})
    nb["cells"].append(
        {
            "cell_type": "code",
            "source": "",
            "metadata": {},
            "outputs": [
                {
                    "output_type": "display_data",
                    "metadata": {},
                    "data": {RESULT_MIME: {"kind": "result", "status": "changed"}},
                }
            ],
        }
    )
    final = notebook_json.final_result(notebook_json.results_of(nb))
    assert final is not None and final["status"] == "changed"


def test_the_record_header_names_secrets_by_source_and_exit_codes_by_status() -> None:
    decls = [Param("host", "host", ""), Param("token", "secret", ""), Param("n", "int", 1)]
    values = {"host": "lab", "token": "env:CF_TOKEN", "n": 3}
    started = record_header.header(
        runbook="cloudflare-aaaa",
        host="lab",
        decls=decls,
        values=values,
        mode="headless",
        start="2024-05-01T10:00:00Z",
    )
    # every field of the index (run_index.FIELDS) but those the store adds: path, sha256
    assert set(started) == {*run_index.FIELDS} - {"path", "sha256"}
    assert started["parameters"] == values  # a secret's source is kept, it names no value
    assert (started["status"], started["exit_code"], started["end"]) == ("running", None, None)
    assert started["opslib_version"] == __version__
    leaked = record_header.header(
        runbook="cloudflare-aaaa",
        host="lab",
        decls=decls,
        values={**values, "token": "s3cr3t-value"},
        mode="interactive",
        start="2024-05-01T10:00:00Z",
    )
    assert leaked["parameters"]["token"] == secrets.REDACTED
    for status, code in (("ok", 0), ("failed", 1), ("bad-input", 2), ("killed", 130)):
        done = record_header.finished(
            started, status=status, changed=False, summary="s", end="2024-05-01T10:00:07Z"
        )
        assert (done["status"], done["exit_code"], done["end"]) == (
            status,
            code,
            "2024-05-01T10:00:07Z",
        )
    assert started["status"] == "running"  # finished() leaves the started header alone


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused command printed (exit 2, no traceback)."""
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    [line] = done.stderr.splitlines()
    return line


@pytest.mark.parametrize("command", [[], ["reindex"], ["show", "1"], ["html"], ["search", "vm"]])
def test_a_records_path_that_is_a_file_is_refused_in_one_line(
    tmp_path: Path, command: list[str]
) -> None:
    afile = tmp_path / "records"
    afile.write_text("not a directory\n")
    line = one_line(records_cli(afile, *command))
    assert f"record store {afile}: not a directory (it is a file)" in line
    assert afile.read_text() == "not a directory\n"
    inside = one_line(records_cli(afile / "sub", *command))  # a file on the way to it
    assert f"record store {afile / 'sub'}: not a directory ({afile} is a file)" in inside


def test_a_damaged_index_says_so_and_reindex_rebuilds_it(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for day in (1, 2):
        store.add(header(start=f"2024-05-0{day}T10:00:00Z"), notebook())
    store.index_path.write_bytes(b"\x00garbage, not sqlite\xff" * 200)
    for command in ([], ["show", "1"], ["html"], ["search", "lab"]):
        line = one_line(records_cli(tmp_path, *command))
        assert "is damaged" in line and "`opsbook records reindex` rebuilds it" in line, line
    done = records_cli(tmp_path, "reindex")
    assert done.returncode == 0 and "indexed 2 records" in done.stdout, done.stderr
    listing = records_cli(tmp_path)
    assert listing.returncode == 0 and listing.stdout.count("host-health") == 2


def test_reindex_names_a_file_that_is_not_a_record_in_one_warning(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.add(header(), notebook())
    garbage = tmp_path / "lab/2024/05/01/110000Z-host-health.ipynb"
    garbage.write_bytes(b"{garbage")
    done = records_cli(tmp_path, "reindex")
    assert done.returncode == 0 and "indexed 1 record " in done.stdout
    [warning] = done.stderr.splitlines()
    assert warning.startswith("opsbook: warning: ")
    assert "lab/2024/05/01/110000Z-host-health.ipynb" in warning


@pytest.mark.parametrize("command", [[], ["search", "lab"]])
def test_a_negative_count_is_refused(tmp_path: Path, command: list[str]) -> None:
    Store(tmp_path).add(header(), notebook())
    for value in ("-5", "five"):
        line = one_line(records_cli(tmp_path, *command, "-n", value))
        assert line == f"opsbook: -n {value}: give a number of runs, 0 or more (0: all)"
