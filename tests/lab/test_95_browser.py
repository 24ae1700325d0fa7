"""The runbooks in JupyterLab, driven in a real browser (Debian's chromium via playwright).

Against the session's lab: find-vm-ip (pick a guest in the dropdown, run, its
addresses in the rendered table, save the record), forward-bridge on a bare host
(the diff, Apply disabled while it runs, "changed" and the verification checks,
the record filed on apply), then the static records index (``opsbook records
html``) lists both runs. A PNG per step goes to artifacts/browser/; every test
asserts on page content, and the browser console must stay free of errors.

forward-bridge needs a bare host, and test_30 converted the session's lab: when the
host already has br0, the module rebuilds the lab bare first (``lab down`` + ``lab
up``, about a minute; this module runs last, so no later module sees the change).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jupyter_browser
import pytest
from jupyter_browser import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    KERNEL_WAIT,
    Console,
    last_result,
    result_table,
    table_rows,
    watched_page,
    widget_button,
)
from playwright.sync_api import Browser, Page, expect, sync_playwright

from opslib.lab import notebook as lab_notebook
from opslib.lab.config import Lab
from opslib.lab.simulated import control, labvirt

# a lab of its own, configured as the wiki says, beside the simulated session (test.sh)
pytestmark = [pytest.mark.browser, pytest.mark.lab_session("configured")]

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "artifacts" / "browser"
# Keeps the text of every .opsbook-progress element the page renders, in order
# (ipywidgets replaces the HTML widget's content on each update).
RECORD_PROGRESS_JS = """() => {
  window.opsbookProgressTexts = [];
  const seen = (node) => {
    if (node.nodeType !== Node.ELEMENT_NODE) return;
    const found = node.matches('.opsbook-progress') ? [node]
      : Array.from(node.querySelectorAll('.opsbook-progress'));
    for (const el of found) window.opsbookProgressTexts.push(el.textContent);
  };
  new MutationObserver((records) => {
    for (const r of records) r.addedNodes.forEach(seen);
  }).observe(document.body, {childList: true, subtree: true});
}"""


def _progress(line: str) -> None:
    print(f"lab: {line}", file=sys.stderr, flush=True)


@pytest.fixture(scope="module")
def bare_lab(lab: Lab) -> Lab:
    """The session's lab with its host bare (rebuilt when an earlier module converted it)."""
    br0 = subprocess.run(["ip", "-n", lab.host_ns, "link", "show", "br0"], capture_output=True)
    converted = "br0" in lab.interfaces_file.read_text() or br0.returncode == 0
    if converted:
        control.down(lab, progress=_progress)
        control.up(lab, progress=_progress)
    assert "br0" not in lab.interfaces_file.read_text()
    return lab


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("records")


@pytest.fixture(scope="module")
def server(
    bare_lab: Lab, records: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[lab_notebook.NotebookServer]:
    srv = lab_notebook.start_for_lab(
        bare_lab, records=records, state_dir=tmp_path_factory.mktemp("jupyterlab")
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        # a fresh profile per launch (playwright's temporary user-data-dir)
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[tuple[Page, Console]]:
    with watched_page(browser) as watched:
        yield watched


def shot(page: Page, name: str) -> None:
    jupyter_browser.shot(page, SHOTS, name)


def open_and_run_all(page: Page, server: lab_notebook.NotebookServer, runbook: str) -> None:
    jupyter_browser.open_and_run_all(page, server.url_for(f"notebooks/{runbook}.ipynb"))


def test_find_vm_ip_pick_a_guest_and_see_its_addresses(
    bare_lab: Lab, server: lab_notebook.NotebookServer, page: tuple[Page, Console]
) -> None:
    pg, _ = page
    guest = bare_lab.nat_guests[0]
    lease = labvirt.nat_leases(bare_lab)[guest.nat_mac]
    open_and_run_all(pg, server, "find-vm-ip")

    # the form starts from the lab's parameter set, not the notebook's qemu:///system
    vm_field = pg.locator(".widget-dropdown").filter(has=pg.locator("label", has_text="vm"))
    expect(vm_field.locator("select")).to_be_visible(timeout=KERNEL_WAIT)
    uri = pg.locator(".widget-text").filter(has=pg.locator("label", has_text="libvirt_uri"))
    expect(uri.locator("input")).to_have_value(bare_lab.uri)
    expect(last_result(pg)).to_contain_text("find-vm-ip on lab", timeout=KERNEL_WAIT)
    shot(pg, "01-find-vm-ip-form")

    options = vm_field.locator("option").all_inner_texts()
    assert {g.name for g in bare_lab.guests} <= set(options), options
    vm_field.locator("select").select_option(guest.name)
    widget_button(pg, "Run").click()
    summary = pg.locator(".jp-OutputArea-output p", has_text="VM(s)").last
    expect(summary).to_contain_text("1 VM(s)", timeout=60_000)
    table = result_table(pg, "addresses")
    rows = table_rows(table)
    assert rows and all(r["vm"] == guest.name for r in rows), rows
    assert any(r["ip"] == lease and r["source"] == "lease" for r in rows), rows
    expect(table).to_contain_text(guest.nat_mac)
    table.scroll_into_view_if_needed()
    shot(pg, "02-find-vm-ip-one-guest")

    save = widget_button(pg, "Save record")
    expect(save).to_be_enabled()
    save.click()
    expect(pg.get_by_text(re.compile(r"^Record: .*find-vm-ip"))).to_be_visible(timeout=30_000)
    expect(save).to_be_disabled()
    shot(pg, "03-find-vm-ip-record-saved")


def test_under_a_policy_apply_waits_for_an_approval_of_the_saved_plan(
    bare_lab: Lab, server: lab_notebook.NotebookServer, page: tuple[Page, Console]
) -> None:
    """A policy beside the lab's parameter sets asks for approval of forward-bridge:
    Apply is disabled and says why; Save plan files the plan and names it; Apply then
    names the approve command. Nothing is applied (the next test applies)."""
    pg, _ = page
    policy = Path(server.env["OPSBOOK_DEFAULTS"]) / "policy.yaml"
    policy.write_text("approval: [forward-bridge]\n")
    try:
        open_and_run_all(pg, server, "forward-bridge")
        plan = pg.locator(".jp-OutputArea-output h4", has_text="Plan for forward-bridge on lab")
        expect(plan).to_be_visible(timeout=KERNEL_WAIT)
        apply, save = widget_button(pg, "Apply"), widget_button(pg, "Save plan")
        why = pg.get_by_text(re.compile(r"applies only a saved plan another person approved"))
        expect(why).to_be_visible(timeout=30_000)
        expect(apply).to_be_disabled()
        shot(pg, "04a-forward-bridge-policy")
        save.click()
        saved = pg.get_by_text(re.compile(r"^Saved as plan #\d+ by "))
        expect(saved).to_be_visible(timeout=30_000)
        ident = re.search(r"plan #(\d+)", saved.inner_text())
        assert ident, saved.inner_text()
        waits = pg.get_by_text(re.compile(rf"plan #{ident.group(1)} is not approved"))
        expect(waits).to_contain_text(f"opsbook approve {ident.group(1)}")
        expect(apply).to_be_disabled()
        expect(widget_button(pg, "Check approval")).to_be_enabled()
        shot(pg, "04b-forward-bridge-plan-saved")
    finally:
        policy.unlink()
    assert "br0" not in bare_lab.interfaces_file.read_text()


def test_forward_bridge_diff_apply_changed_and_verified(
    bare_lab: Lab, server: lab_notebook.NotebookServer, page: tuple[Page, Console]
) -> None:
    pg, _ = page
    open_and_run_all(pg, server, "forward-bridge")

    plan = pg.locator(".jp-OutputArea-output h4", has_text="Plan for forward-bridge on lab")
    expect(plan).to_be_visible(timeout=KERNEL_WAIT)
    diff = pg.locator(".jp-OutputArea-output pre").filter(has_text="bridge_ports eth0").first
    expect(diff).to_contain_text("iface br0 inet dhcp")
    added = diff.locator("span", has_text="iface br0 inet dhcp")
    assert "color:#1a7f37" in (added.get_attribute("style") or "").replace(" ", "")
    apply = widget_button(pg, "Apply")
    expect(apply).to_be_enabled()
    shot(pg, "04-forward-bridge-plan")

    # The apply can take about a second: rather than racing it with polls, the page
    # keeps every progress text it rendered, and the test reads that sequence.
    pg.evaluate(RECORD_PROGRESS_JS)
    apply.click()
    # disabled while it runs
    expect(apply).to_be_disabled(timeout=5_000)
    shot(pg, "05-forward-bridge-applying")

    result = pg.locator(".jp-OutputArea-output h4", has_text=re.compile(r"^forward-bridge on lab:"))
    expect(result).to_contain_text("changed", timeout=150_000)
    # while it ran, the line named the procedure's current step, and the steps already
    # passed, in the order the procedure ran them
    shown: list[str] = pg.evaluate("window.opsbookProgressTexts")
    running = [t for t in shown if t.startswith("⏳ Applying")]
    assert running, shown
    naming = [
        t
        for t in running
        if re.search(
            r": (back up|write|validate .*|arm the revert watchdog|restart networking"
            r"|verify) \(\d+ s\)",
            t,
        )
    ]
    assert naming, f"no progress text named a step while applying: {shown}"
    step_names = [r["name"] for r in table_rows(result_table(pg, "Steps"))]
    last = naming[-1]
    current = re.search(r": (.+?) \(\d+ s\)…", last)
    assert current and current.group(1) in step_names, (last, step_names)
    trail = re.search(r"\(done: (.*)\)$", last)
    passed = [re.sub(r" \d+\.\d s$", "", t) for t in trail.group(1).split(", ")] if trail else []
    assert passed == step_names[: len(passed)], (passed, step_names)
    checks = result_table(pg, "Checks")
    check_rows = table_rows(checks)
    names = {r["name"]: r["status"] for r in check_rows}
    for name in ("br0 up", "eth0 is its port", "br0 has an address", "gateway answers"):
        assert names.get(name) == "ok", check_rows
    expect(pg.get_by_text(re.compile(r"^Record: .*forward-bridge"))).to_be_visible()
    expect(apply).to_be_disabled()  # plan again before another apply
    checks.scroll_into_view_if_needed()
    shot(pg, "06-forward-bridge-changed")


def test_records_index_lists_the_interactive_runs(
    records: Path, page: tuple[Page, Console]
) -> None:
    pg, _ = page
    out = records / "index.html"
    done = subprocess.run(
        [sys.executable, "-m", "opslib.cli.main", "records", "--records", str(records), "html"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    pg.goto(out.as_uri())
    rows = pg.locator("#runs tbody tr")
    # find-vm-ip's saved record, forward-bridge's plan saved under the policy, its apply
    expect(rows).to_have_count(3)
    fvi = rows.filter(has_text="find-vm-ip")
    expect(fvi).to_contain_text("lab")
    expect(fvi.locator("td.ok")).to_have_text("ok")
    expect(rows.filter(has_text="forward-bridge").filter(has_text="plan: ")).to_have_count(1)
    fb = rows.filter(has_text="forward-bridge").filter(has_not_text="plan: ")
    expect(fb.locator("td.ok")).to_have_text("ok")
    expect(fb.locator("td").nth(5)).to_have_text("yes")
    shot(pg, "07-records-index")

    pg.locator("#f-runbook").select_option("forward-bridge")
    expect(fvi).to_be_hidden()
    expect(fb).to_be_visible()
    # every link of the row resolves: the host's page, the record's page, its notebook
    hrefs = [a.get_attribute("href") or "" for a in fb.locator("a").all()]
    assert [h for h in hrefs if h.endswith(".ipynb")], hrefs
    assert [h for h in hrefs if h.endswith(".html") and not h.endswith("/index.html")], hrefs
    assert all(h and (out.parent / h).is_file() for h in hrefs), hrefs
    shot(pg, "08-records-index-filtered")
