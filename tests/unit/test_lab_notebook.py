"""JupyterLab sessions pointed at a lab: per-lab parameter sets and the forms they pre-fill.

No root needed: the lab is only named here (paths, namespaces, ports), never built.
The browser test in tests/lab/test_95_browser.py drives the real thing.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from opslib.core.changes import Result
from opslib.engine import runbook
from opslib.engine.runner import load_param_file
from opslib.lab import notebook as lab_notebook
from opslib.lab import processes
from opslib.lab.cloudflare import service
from opslib.lab.config import Lab
from opslib.lab.simulated import sets
from opslib.records.store import Store

CELL = """host = "lab"  # host: records are filed under
libvirt_uri = "qemu:///system"  # libvirt-uri: libvirt connection of the host
netns = ""  # netns: the host's network namespace
count = 2  # int: how many
probe = False  # bool: ping first
"""


@pytest.mark.parametrize("prefix", ["ob", "obQ"])
def test_every_lab_gets_the_simulated_hosts_sets_written_for_it(
    tmp_path: Path, prefix: str
) -> None:
    # parameters/lab/ is the booted host's; the simulated host's sets come from the lab's code
    lab = Lab(prefix=prefix, base=tmp_path)
    written = lab_notebook.lab_defaults(lab)
    assert written == tmp_path / prefix / "parameters"
    assert sorted(p.stem for p in written.glob("*.yaml")) == sorted(sets.sets(lab))
    # what it gives that lab, typed: tests/unit/test_lab_parameters.py
    values = load_param_file(written / "forward-bridge.yaml")
    host_process = shlex.join(processes.host_command(lab, ["sh", "-c", "x"])[:-1])
    assert values["restart_command"].startswith(host_process + " ")
    assert f"--state-dir {lab.ifupdown_state_dir} " in values["restart_command"]
    assert (values["libvirt_uri"], values["netns"], values["interfaces_file"]) == (
        lab.uri, lab.host_ns, str(lab.interfaces_file),
    )  # fmt: skip
    values = load_param_file(written / "cloudflare-aaaa.yaml")
    assert values["token"] == f"file:{service.lab_token_file(lab)}"
    assert values["api_base_url"] == service.lab_url(lab)
    assert (values["libvirt_uri"], values["netns"]) == (lab.uri, lab.host_ns)
    assert f":{service.lab_port(lab)}/" in values["api_base_url"]


def test_another_labs_sets_name_none_of_the_default_labs_namespaces_or_files(
    tmp_path: Path,
) -> None:
    lab = Lab(prefix="obQ", base=tmp_path)
    text = "".join(p.read_text() for p in lab_notebook.lab_defaults(lab).glob("*.yaml"))
    assert "ob-host" not in text and "/opsbook-lab/ob/" not in text
    assert f"{lab.host_ns} " in text and "opsbook-lab-host" in text  # the process's name stays


def test_environment_points_records_and_defaults_at_the_lab(tmp_path: Path) -> None:
    lab = Lab(prefix="obQ", base=tmp_path)
    env = lab_notebook.lab_environment(lab, records=tmp_path / "records")
    assert env == {
        "OPSBOOK_DEFAULTS": str(tmp_path / "obQ" / "parameters"),
        "OPSBOOK_RECORDS": str((tmp_path / "records").resolve()),
        "OPSBOOK_LAB_PREFIX": "obQ",
    }


@pytest.fixture
def interactive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("OPSBOOK_HEADLESS", raising=False)
    monkeypatch.delenv("OPSBOOK_NOTEBOOK", raising=False)
    monkeypatch.setenv("OPSBOOK_RECORDS", str(tmp_path / "records"))
    monkeypatch.setenv("OPSBOOK_DEFAULTS", str(tmp_path / "defaults"))
    monkeypatch.setenv("OPSBOOK_RUNBOOK", "probe-thing")
    (tmp_path / "defaults").mkdir()
    (tmp_path / "defaults" / "probe-thing.yaml").write_text(
        "libvirt_uri: test:///default\nnetns: lab-host\ncount: '7'\nprobe: 'false'\n"
    )
    return tmp_path


def test_interactive_form_starts_from_the_host_parameter_set(interactive: Path) -> None:
    ns: dict = {"In": [CELL], "probe": True}  # the operator changed probe in the cell
    rb = runbook.start(ns)
    assert rb.values["libvirt_uri"] == "test:///default" and rb.values["netns"] == "lab-host"
    assert rb.values["count"] == 7 and ns["count"] == 7  # typed, and seen by later cells
    assert rb.values["probe"] is True  # a value changed in the cell wins over the set


def test_headless_runs_ignore_the_parameter_set(
    interactive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPSBOOK_HEADLESS", "1")
    rb = runbook.start({"In": [CELL]})
    assert rb.values["libvirt_uri"] == "qemu:///system" and rb.values["count"] == 2


def test_interactive_report_runs_at_once_and_saves_a_record_on_request(
    interactive: Path,
) -> None:
    rb = runbook.start({"In": [CELL]})
    calls: list[int] = []

    def run(*, host: str, count: int) -> Result:
        calls.append(count)
        return Result("probe-thing", host, "ok", summary=f"{count} found")

    assert rb.report(run) is None  # interactive: the panel shows it, no Out[] repr
    assert calls == [7] and not rb.save_button.disabled
    rb.save_button.click()
    (row,) = Store(interactive / "records").list()
    assert (row.runbook, row.status, row.mode, row.summary) == (
        "probe-thing",
        "ok",
        "interactive",
        "7 found",
    )
    assert rb.save_button.disabled  # saved once
    rb.run_button.click()
    assert calls == [7, 7] and not rb.save_button.disabled
    rb.form.box.children[4].children[0].value = "3"  # the form changed: result is stale
    assert rb.save_button.disabled
