"""One renderer for plans and results (opslib.records.render): what the notebook displays
(opslib.engine.ui's bundle, as JupyterLab shows it) and what the records site's page of
that run shows are the same HTML, for a plan's changes and diffs and for a result's
steps and checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from opslib.core.changes import Change, Check, Plan, Result, Step
from opslib.engine import ui
from opslib.records import site as record_site
from opslib.records.notebook_json import RESULT_MIME
from opslib.records.store import Store

HEADER = {
    "runbook": "forward-bridge", "host": "lab", "parameters": {"host": "lab"},
    "user": "operator", "start": "2024-05-01T10:00:00Z", "end": "2024-05-01T10:00:09Z",
    "status": "ok", "exit_code": 0, "changed": True, "summary": "br0 over eth0",
    "opslib_version": "0.1.0", "revision": "abc123", "mode": "headless", "pid": 1,
}  # fmt: skip


def a_plan() -> Plan:
    change = Change(
        "file:/etc/network/interfaces", "update", "br0 takes eth0 <as its port>",
        "iface eth0 inet dhcp\n", "iface br0 inet dhcp\n    bridge_ports eth0\n",
    )  # fmt: skip
    return Plan("forward-bridge", "lab", (change,), notes=("eth0 & br0: one link",))


def a_result() -> Result:
    result = Result("forward-bridge", "lab", "changed", changes=list(a_plan().changes))
    result.summary = "br0 over eth0"
    result.steps = [
        Step("write /etc/network/interfaces", 0.0, 0.125, True, "3 lines"),
        Step("verify", 0.2, 1.5, False, "br0 has no address"),
    ]
    result.checks = [
        Check("br0 up", "ok", "UP", fix="ip link set br0 up"),
        Check("br0 has an address", "fail", "none", fix="ifup br0"),
    ]
    return result


def shown(monkeypatch: pytest.MonkeyPatch, show: Any, thing: Any) -> dict[str, Any]:
    """The bundle the notebook displays for ``thing``."""
    import IPython.display

    bundles: list[dict[str, Any]] = []
    monkeypatch.setattr(IPython.display, "display", lambda b, raw: bundles.append(b))
    show(thing)
    (bundle,) = bundles
    return bundle


def test_the_notebook_and_the_records_site_render_a_plan_and_a_result_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = shown(monkeypatch, ui.show_plan, a_plan())
    result = shown(monkeypatch, ui.show_result, a_result())
    # the notebook's plan: the change, its diff coloured line by line, the note
    assert "<h4>Plan for forward-bridge on lab: 1 change</h4>" in plan["text/html"]
    assert "br0 takes eth0 &lt;as its port&gt;" in plan["text/html"]
    added = '<span class="add" style="color:#1a7f37">+    bridge_ports eth0</span>'
    assert added in plan["text/html"] and "eth0 &amp; br0: one link" in plan["text/html"]
    # the notebook's result: the steps with their times, the checks with a fix where not ok
    html = result["text/html"]
    assert "<h5>Steps</h5>" in html and "<td>0.12</td>" in html and "<td>FAILED</td>" in html
    assert "<h5>Checks</h5>" in html and "ifup br0" in html and "ip link set br0 up" not in html

    outputs = [{"output_type": "display_data", "metadata": {}, "data": b} for b in (plan, result)]
    nb = {
        "nbformat": 4, "nbformat_minor": 5, "metadata": {},
        "cells": [{"cell_type": "code", "metadata": {}, "source": "rb.plan(...)",
                   "outputs": outputs, "execution_count": 1}],
    }  # fmt: skip
    store = Store(tmp_path)
    _, path = store.add(HEADER, nb)
    record_site.build(store)
    page = path.with_suffix(".html").read_text()
    # the site's page of that run holds the very HTML the notebook showed, in that order
    assert plan["text/html"] in page and result["text/html"] in page
    assert page.index(plan["text/html"]) < page.index(result["text/html"])
    assert plan[RESULT_MIME]["kind"] == "plan" and result[RESULT_MIME]["kind"] == "result"
