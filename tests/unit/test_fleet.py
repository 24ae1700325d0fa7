"""opsbook fleet without hosts: input checks (exit 2 before Ansible runs), the table's rows
from Ansible's events, records filed with their fleet run, the manifest --retry-failed reads.
The runs on real hosts are tests/lab/test_18_fleet.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opslib.cli import main
from opslib.core.errors import InputError
from opslib.fleet import outcome
from opslib.records.store import Store

INVENTORY = """\
daemon_hosts:
  hosts:
    alpha:
    beta:
  vars:
    opsbook_parameter_sets: "{sets}"
"""


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    sets = tmp_path / "parameters"
    (sets / "beta").mkdir(parents=True)
    path = tmp_path / "inventory.yml"
    path.write_text(INVENTORY.format(sets=sets))
    return path


def fleet(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    rc = main.main(["fleet", *argv])
    out, err = capsys.readouterr()
    return rc, out + err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["run", "no-such-runbook"], "no runbook named 'no-such-runbook'"),
        (["run", "host-health", "-p", "nat_netwrok", "x"], "nat_netwrok"),
        (["run", "host-health", "--serial", "0"], "--serial '0'"),
        (["run", "host-health", "--serial", "150%"], "--serial '150%'"),
        (["run", "host-health", "--max-fail-percentage", "101"], "--max-fail-percentage 101"),
        (["run", "host-health", "--limit", "gamma"], "no host matches --limit 'gamma'"),
        (["run", "host-health", "--forks", "0"], "--forks 0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
    inventory: Path,
    tmp_path: Path,
    args: list[str],
    says: str,
) -> None:
    rc, text = fleet(capsys, *args, "-i", str(inventory), "--records", str(tmp_path / "r"))
    assert rc == 2 and says in text and text.count("\n") == 1, text
    assert not (tmp_path / "r" / outcome.MANIFESTS).exists()


def test_a_hosts_parameter_set_is_checked_before_any_host(
    capsys: pytest.CaptureFixture[str], inventory: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "parameters" / "beta" / "host-health.yaml"
    bad.write_text("uplink: not an interface name!\n")
    rc, text = fleet(capsys, "run", "host-health", "-i", str(inventory))
    assert rc == 2 and "host-health on beta: " in text and "uplink" in text, text
    bad.write_text("nat_netwrok: default\n")
    rc, text = fleet(capsys, "run", "host-health", "-i", str(inventory))
    assert rc == 2 and str(bad) in text and "nat_network" in text, text


@pytest.mark.parametrize(
    ("param", "says"),
    [
        (["-p", "nat_netwrok", "x"], "host-health -p nat_netwrok: no parameter named "),
        (["-p", "uplink", "eth0!"], "host-health -p uplink: parameter uplink (ifname): 'eth0!' "),
    ],
)
def test_a_bad_p_is_refused_before_the_inventory_is_loaded(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, param: list[str], says: str
) -> None:
    """The inventory's Jinja templates run when it is loaded (a pipe lookup runs a shell
    command): a bad -p is refused before that, and before a missing inventory is noticed."""
    from opslib.fleet import playbooks

    trace = tmp_path / "templated"
    path = tmp_path / "inventory.yml"
    sets = f"{{{{ lookup('pipe', 'touch {trace}') }}}}{tmp_path / 'parameters'}"
    path.write_text(INVENTORY.format(sets=sets))
    rc, text = fleet(capsys, "run", "host-health", "-i", str(path), *param)
    assert rc == 2 and says in text and text.count("\n") == 1, text
    assert not trace.exists(), "the inventory was templated before -p was checked"
    rc, text = fleet(capsys, "run", "host-health", "-i", str(tmp_path / "none.yml"), *param)
    assert rc == 2 and says in text and "inventory" not in text, text
    playbooks.load_inventory(path)  # loading it does run the template: the check above can fail
    assert trace.exists()


def test_loading_an_inventory_leaves_the_collector_as_it_was(tmp_path: Path) -> None:
    """It is off while Ansible loads it (playbooks._collector_paused), on again after, even
    when the inventory is refused."""
    import gc

    from opslib.fleet import playbooks

    path = tmp_path / "inventory.yml"
    path.write_text(INVENTORY.format(sets=tmp_path / "parameters"))
    assert playbooks.load_inventory(path).hosts and gc.isenabled()
    with pytest.raises(InputError, match="no host matches"):
        playbooks.load_inventory(path, "no-such-host")
    assert gc.isenabled()
    gc.disable()
    try:
        playbooks.load_inventory(path)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_missing_inventory_names_the_file(capsys: pytest.CaptureFixture[str]) -> None:
    rc, text = fleet(capsys, "run", "host-health", "-i", "/nonexistent/inv.yml")
    assert rc == 2 and "-i /nonexistent/inv.yml: no such inventory file" in text


def _event(kind: str, host: str, task: str, **res: object) -> dict[str, object]:
    return {"event": kind, "event_data": {"host": host, "task": task, "res": res}}


def test_events_fold_into_one_row_per_host() -> None:
    said: list[str] = []
    fold = outcome.Fold(["a", "b", "c", "d", "e"], said.append)
    fold(_event("runner_on_start", "a", outcome.T_RUN))
    fold(_event("runner_on_ok", "a", outcome.T_RUN, rc=0, changed=True, stdout="ok (changed): x"))
    fold(_event("runner_on_ok", "b", outcome.T_RUN, rc=1, stdout="", stderr="failed: y"))
    fold(_event("runner_on_failed", "b", outcome.T_OUTCOME, msg="exited 1"))
    fold(_event("runner_on_unreachable", "c", "Gathering", msg="ssh: connect: timed out"))
    fold(_event("runner_on_failed", "d", outcome.T_OUTCOME, msg="opsbook is not installed"))
    rows = {r.host: r for r in fold.finish(stopped_early=True)}
    assert [(h, r.status) for h, r in rows.items()] == [
        ("a", "changed"), ("b", "failed"), ("c", "unreachable"), ("d", "failed"), ("e", "skipped"),
    ]  # fmt: skip
    assert rows["b"].summary == "failed: y"
    assert rows["c"].summary.startswith("bring it back (link, sshd), then --retry-failed: ssh:")
    assert rows["d"].summary == "opsbook is not installed"
    assert "stopped at a failure" in rows["e"].summary
    assert said[0] == "a: running"


def test_a_record_sent_in_the_run_tasks_output_comes_home_and_is_not_the_summary(
    tmp_path: Path,
) -> None:
    import base64
    import gzip

    body = json.dumps({"cells": [], "metadata": {}}).encode()
    packed = base64.b64encode(gzip.compress(body)).decode()
    said = "ok (no change): all 8 checks passed  (record #7: a/2026/12/07/1Z-host-health.ipynb)"
    stdout = (
        f"{outcome.RECORD}a/2026/12/07/1Z-host-health.ipynb\n{packed}\n{outcome.RECORD_END}\n{said}"
    )
    fold = outcome.Fold(["a", "d"], [].append, tmp_path)
    fold(_event("runner_on_ok", "a", outcome.T_RUN, rc=0, changed=False, stdout=stdout))
    fold(_event("runner_on_ok", "d", outcome.T_RUN, rc=0, stdout=f"{outcome.PREFLIGHT}missing"))
    fold(_event("runner_on_failed", "d", outcome.T_OUTCOME, msg="opsbook is not installed on d"))
    rows = {r.host: r for r in fold.finish(stopped_early=False)}
    assert (rows["a"].status, rows["a"].summary) == ("ok", said)
    assert (tmp_path / "a" / "1Z-host-health.ipynb").read_bytes() == body
    assert (rows["d"].status, rows["d"].summary) == ("failed", "opsbook is not installed on d")


def test_records_come_home_with_their_fleet_run(tmp_path: Path) -> None:
    fetched = tmp_path / "fetched" / "alpha"
    fetched.mkdir(parents=True)
    header = {
        "id": 7, "runbook": "host-health", "host": "alpha", "status": "failed",
        "start": "2026-11-29T02:00:00Z", "end": "2026-11-29T02:00:05Z", "changed": False,
        "summary": "1 failed: br0 up", "parameters": {},
    }  # fmt: skip
    nb = {"cells": [], "metadata": {"opsbook": header}, "nbformat": 4, "nbformat_minor": 5}
    (fetched / "020000Z-host-health.ipynb").write_text(json.dumps(nb))
    store = Store(tmp_path / "records")
    rows = [outcome.HostRow("alpha", status="ok"), outcome.HostRow("beta", status="unreachable")]
    outcome.import_records(rows, tmp_path / "fetched", store, "RUN1")
    assert (rows[0].status, rows[0].summary) == ("failed", "1 failed: br0 up")
    [filed] = store.list(host="alpha")
    assert rows[0].record == f"#{filed.id} alpha/2026/11/29/020000Z-host-health.ipynb"
    assert store.notebook(filed)["metadata"]["opsbook"]["fleet_run"] == "RUN1"
    outcome.write_manifest(store.root, {"id": "RUN1", "runbook": "host-health"}, rows)
    again = outcome.load_manifest(store.root)
    assert [h for h, r in again["hosts"].items() if r["status"] in outcome.NOT_DONE] == [
        "alpha", "beta",
    ]  # fmt: skip
    with pytest.raises(Exception, match="no fleet run 'RUN2'"):
        outcome.load_manifest(store.root, "RUN2")


def test_a_fleet_wide_question_answers_where_and_hosts_without_it_are_ok() -> None:
    """find-vm-ip -p vm NAME on hosts that do not run NAME: their `no VM named` (exit 2 on
    one host) is an answer, not bad input; the line names the host that runs it."""
    from opslib.fleet import questions

    def rows() -> list[outcome.HostRow]:
        absent = "no VM named 'web1'; known: db1"
        return [
            outcome.HostRow("h1", "bad-input", absent),
            outcome.HostRow("h2", "ok", "1 VM(s), 1 interface(s), 1 with an address"),
            outcome.HostRow("h3", "bad-input", "no VM named 'web1'; there is no VM at all"),
            outcome.HostRow("h4", "unreachable", "bring it back"),
        ]

    here = rows()
    line = questions.answer("find-vm-ip", {"vm": "web1"}, here, store=None)
    assert line == "VM web1 runs on h2: no address seen"
    assert [(r.status, r.summary.split(" (")[0]) for r in here] == [
        ("ok", "not on this host"), ("ok", "1 VM(s), 1 interface(s), 1 with an address"),
        ("ok", "not on this host"), ("unreachable", "bring it back"),
    ]  # fmt: skip
    nowhere = [r for r in rows() if r.host != "h2"]
    line = questions.answer("find-vm-ip", {"vm": "web1"}, nowhere, store=None)
    assert line == "VM web1 runs on none of the 2 host(s) that answered"
    assert [r.status for r in nowhere] == ["bad-input", "bad-input", "unreachable"]
    assert questions.answer("find-vm-ip", {}, rows(), store=None) is None  # every VM: no question
    assert questions.answer("host-health", {"vm": "web1"}, rows(), store=None) is None


def test_version_names_the_wheelhouse_it_was_installed_from(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What fleet install compares a host's opsbook with: the version, and the wheelhouse id
    that install-daemon-host.sh keeps in PREFIX/share/opsbook (none in a checkout's venv)."""
    import sys

    from opslib import __version__

    def version() -> str:
        with pytest.raises(SystemExit) as exited:
            main.main(["--version"])
        assert exited.value.code == 0
        return capsys.readouterr().out.strip()

    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    assert version() == f"opsbook {__version__}"
    kept = tmp_path / "share" / "opsbook" / "wheelhouse.id"
    kept.parent.mkdir(parents=True)
    kept.write_text("3f2a" * 16 + "\n")
    assert version() == f"opsbook {__version__} (wheelhouse {'3f2a' * 16})"


class Reached(Exception):
    """The fleet run got past its checks to Ansible."""


def test_a_directory_on_the_target_is_not_looked_for_on_the_workstation(
    capsys: pytest.CaptureFixture[str], inventory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opslib.fleet import playbooks

    class Gated:  # playbooks.Started: Ansible up, waiting for its hosts
        def open(self, hosts: list[str]) -> None:
            raise Reached

        def abort(self) -> None:
            pass

    monkeypatch.setattr(playbooks, "start", lambda *_args, **_kw: Gated())
    # /srv/backups-on-the-host exists on the hosts (their opsbook run checks), not here
    with pytest.raises(Reached):
        fleet(capsys, "run", "forward-bridge", "-i", str(inventory),
              "-p", "backup_dir", "/srv/backups-on-the-host")  # fmt: skip
    rc, text = fleet(capsys, "run", "forward-bridge", "-i", str(inventory),
                     "-p", "backup_dir", "relative\0dir")  # fmt: skip
    assert rc == 2 and "backup_dir" in text and "NUL" in text, text


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["plan", "network-inventory"], "network-inventory changes nothing, so it has no plan"),
        (["plan", "libvirt-access", "-p", "apply", "true"], "fleet plan makes no change"),
        (["plan", "libvirt-access", "--limit", "gamma"], "no host matches --limit 'gamma'"),
        (["apply", "RUN9"], "no fleet run 'RUN9'"),
        (["apply", "RUN1"], "fleet run RUN1 is no fleet plan; make one: opsbook fleet plan"),
    ],
)
def test_fleet_plan_and_apply_refuse_bad_input_before_any_host(
    capsys: pytest.CaptureFixture[str],
    inventory: Path,
    tmp_path: Path,
    args: list[str],
    says: str,
) -> None:
    store = tmp_path / "r"
    outcome.write_manifest(store, {"id": "RUN1", "runbook": "host-health"}, [])
    rc, text = fleet(capsys, *args, "-i", str(inventory), "--records", str(store))
    assert rc == 2 and says in text and text.count("\n") == 1, text
    assert sorted(p.name for p in (store / outcome.MANIFESTS).iterdir()) == ["RUN1.json"]


def test_a_fleet_plan_lists_the_plan_each_host_filed_by_its_id_there(tmp_path: Path) -> None:
    from opslib.cli import fleet_plan

    fetched = tmp_path / "fetched" / "alpha"
    fetched.mkdir(parents=True)
    header = {
        "id": 12, "runbook": "libvirt-access", "host": "alpha", "status": "ok",
        "start": "2026-11-29T02:00:00Z", "end": "2026-11-29T02:00:05Z", "changed": False,
        "summary": "plan", "parameters": {}, "mode": "plan",
        "plan": {"digest": "d" * 64, "expires": "2026-11-30T02:00:00Z", "planned_by": "alice"},
    }  # fmt: skip
    nb = {"cells": [], "metadata": {"opsbook": header}, "nbformat": 4, "nbformat_minor": 5}
    (fetched / "020000Z-libvirt-access.ipynb").write_text(json.dumps(nb))
    store = Store(tmp_path / "records")
    rows = [outcome.HostRow("alpha"), outcome.HostRow("beta", status="failed")]
    outcome.import_records(rows, tmp_path / "fetched", store, "RUN1")
    assert rows[0].record_id == 1  # its id at home; the host applies its own id, 12
    found = fleet_plan._host_plan(store, rows[0])
    assert found == {"plan": 12, "digest": "d" * 64, "record": 1}
    assert fleet_plan._host_plan(store, rows[1]) is None
