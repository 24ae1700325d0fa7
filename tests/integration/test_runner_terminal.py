"""``opsbook run`` outlives its terminal: an SSH session cut in the middle of a run hangs
up the terminal (SIGHUP) and closes the pipes its output goes to. The run goes on, files
its record as usual (not killed, not failed by a broken pipe), and the record notes when
the terminal was lost. Real runner processes on the engine-demo fixture runbook, whose
apply waits until a file exists: the test cuts the terminal while the apply waits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from support import eventually, finish, opsbook, partial_cell_running

APPLY_CELL = "rb.apply(apply_fn, plan)"


def _start(store: Path, host: str, release: Path) -> subprocess.Popen[str]:
    # a process group of its own, as the job of a login shell: the hangup goes to all of it
    return opsbook(
        "run", "engine-demo", "--host", host, "-p", "apply", "true",
        "-p", "hold", "300", "-p", "release", str(release), store=store,
        start_new_session=True,
    )  # fmt: skip


def _header(store: Path, host: str) -> dict[str, object]:
    (record,) = (store / host).rglob("*.ipynb")
    return json.loads(record.read_text())["metadata"]["opsbook"]


def test_a_run_whose_terminal_hangs_up_and_goes_away_finishes_and_notes_it(
    tmp_path: Path,
) -> None:
    store, release = tmp_path / "records", tmp_path / "go"
    # "hup": the terminal hangs up (SIGHUP), as a cut SSH session with a tty does;
    # "pipe": the pipes its output goes to close (a cut session without a tty)
    procs = {host: _start(store, host, release) for host in ("hup", "pipe")}
    try:
        for host in procs:
            eventually(
                lambda h=host: partial_cell_running(store, h, APPLY_CELL),
                timeout=300,
                what=f"{host} running its apply cell",
            )
        os.killpg(procs["hup"].pid, signal.SIGHUP)  # the runner and its process group
        pipe = procs["pipe"]
        assert pipe.stdout is not None and pipe.stderr is not None
        pipe.stdout.close()  # nobody reads its output any more
        pipe.stderr.close()
        release.touch()  # the apply goes on, after the cut
        codes = {host: proc.wait(timeout=120) for host, proc in procs.items()}
    finally:
        for proc in procs.values():  # only the runs this test started
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    assert codes == {"hup": 0, "pipe": 0}
    for host in procs:
        header = _header(store, host)
        assert (header["status"], header["changed"]) == ("ok", True), header
        notes = header.get("notes")
        assert isinstance(notes, list) and len(notes) == 1, header
        how = "SIGHUP" if host == "hup" else "its output went away"
        assert notes[0].startswith("the terminal was lost at 20"), notes
        assert notes[0].endswith(f"Z ({how}); the run went on without it"), notes

    # records show says so, and the record speaks for the apply, not for a broken pipe
    run_id = str(_header(store, "pipe").get("id"))
    shown = finish(opsbook("records", "show", run_id, store=store))
    assert shown.rc == 0, shown.err
    assert "status:  ok (exit 0)" in shown.out, shown.out
    assert "note:    the terminal was lost at " in shown.out, shown.out
    assert "BrokenPipe" not in shown.out


def test_sigterm_still_ends_the_run_as_killed_and_its_plan_does_not_claim_no_change(
    tmp_path: Path,
) -> None:
    store, release = tmp_path / "records", tmp_path / "go"
    proc = _start(store, "term", release)
    try:
        eventually(
            lambda: partial_cell_running(store, "term", APPLY_CELL),
            timeout=300,
            what="term running its apply cell",
        )
        proc.send_signal(signal.SIGTERM)
        done = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert done.rc == 130, done.err
    header = _header(store, "term")
    assert header["status"] == "killed", header
    # the apply never said what it did: unknown, not the plan's "no change"
    assert header["changed"] is None, header
    assert "notes" not in header, header
