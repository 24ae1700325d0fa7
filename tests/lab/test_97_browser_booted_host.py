"""JupyterLab on the booted Debian 12 host, reached the usual way: an SSH tunnel.

The operator's path on a real daemon host (docs/operating.md, "JupyterLab on a daemon host"), with
the session's booted host (conftest's ``booted_host``): an SSH session in a terminal runs
``opsbook notebook`` there as the operator (JupyterLab on the host's 127.0.0.1:8888, a
fresh token, the runbooks installed in /opt/opsbook); the workstation opens
``ssh -N -L 127.0.0.1:PORT:127.0.0.1:8888 operator@HOST`` and a browser on
http://127.0.0.1:PORT. The workstation is the campus network namespace, where the lab's
SSH client runs: the tunnel's ssh and chromium both run there.

In chromium: network-inventory with the notebook's real-host defaults (qemu:///system,
the host's own network namespace) shows the networks that ``virsh net-list`` as the
operator lists on the host, with the same state and autostart; Save record files the
run in the operator's ~/records on the host (its index says so). forward-bridge's plan
reads the host's /etc/network/interfaces. Closing the SSH session stops JupyterLab on the
host. No console errors; a PNG per step in artifacts/browser-booted-host/.
"""

from __future__ import annotations

import posixpath
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from jupyter_browser import (
    CHROMIUM_FLAGS,
    KERNEL_WAIT,
    Console,
    chromium_in_netns,
    form_field,
    last_result,
    open_and_run_all,
    result_table,
    shot,
    table_rows,
    watched_page,
    widget_button,
)
from on_host import ssh, wait_for
from playwright.sync_api import Browser, Page, expect, sync_playwright

from opslib.lab.booted import daemonhost
from opslib.lab.booted import ssh as hostssh

pytestmark = [pytest.mark.lab, pytest.mark.browser]

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "artifacts" / "browser-booted-host"
REMOTE_PORT = 8888  # opsbook notebook's default on the host
START_WAIT = 240.0  # s: JupyterLab's first start on the host, on a busy 2-core machine


@dataclass
class Session:
    """The operator's SSH session on the host running ``opsbook notebook`` in a terminal."""

    process: subprocess.Popen[bytes]
    lines: list[str] = field(default_factory=list)

    def read(self) -> None:  # in a thread: everything the terminal shows
        assert self.process.stdout is not None
        for raw in iter(self.process.stdout.readline, b""):
            self.lines.append(raw.decode(errors="replace").rstrip("\r\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass(frozen=True)
class Remote:
    session: Session
    token: str
    pid: int  # JupyterLab's pid on the host
    records: str  # where it files runs, on the host


def listening(host: daemonhost.Host, port: int) -> str:
    return ssh(host, f"ss -Hltn 'sport = :{port}'")[1]


@pytest.fixture(scope="module")
def host(booted_host: daemonhost.Host) -> daemonhost.Host:
    return booted_host


@pytest.fixture(scope="module")
def jupyterlab(host: daemonhost.Host) -> Iterator[Remote]:
    """``opsbook notebook`` as the operator, in a terminal (``ssh -tt``) on the host."""
    assert listening(host, REMOTE_PORT).strip() == "", "something already listens on 8888"
    argv = hostssh.ssh_argv(host.lab, host.name)
    argv[-1:-1] = ["-tt"]  # a terminal, as the operator's: closing it hangs up the session
    process = subprocess.Popen(
        [*argv, "opsbook notebook"],
        stdin=subprocess.PIPE,  # kept open: the session lasts until the test ends it
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    session = Session(process)
    threading.Thread(target=session.read, daemon=True).start()
    pid = None
    try:
        text = wait_for(
            lambda: session.text,
            lambda t: "then open:" in t or process.poll() is not None,
            START_WAIT,
            "opsbook notebook printed no URL",
        )
        url = re.search(r"then open:\s+http://127\.0\.0\.1:(\d+)/lab\?token=(\w+)", text)
        found = re.search(r"JupyterLab on 127\.0\.0\.1:\d+ of \S+, pid (\d+)", text)
        records = re.search(r"records:\s+(\S+)", text)
        assert url and found and records, text
        pid = int(found.group(1))
        assert url.group(1) == str(REMOTE_PORT), text
        assert f"ssh -N -L 127.0.0.1:8888:127.0.0.1:8888 operator@{host.name}" in text, text
        yield Remote(session, url.group(2), pid, records.group(1))
    finally:
        if process.poll() is None:  # test_closing… did not end it
            process.kill()
            process.wait(timeout=30)
        # whatever the tests did, JupyterLab must not outlive the module on the host
        if pid is not None and ssh(host, f"kill -0 {pid}")[0] == 0:
            ssh(host, f"kill {pid}")


@pytest.fixture(scope="module")
def tunnel(host: daemonhost.Host, jupyterlab: Remote) -> Iterator[int]:
    """The workstation's ``ssh -N -L 127.0.0.1:PORT:127.0.0.1:8888`` (campus netns); PORT."""
    campus = host.lab.campus_ns
    port = int(
        subprocess.run(
            ["ip", "netns", "exec", campus, "python3", "-c",
             "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); "
             "print(s.getsockname()[1])"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout
    )  # fmt: skip
    process = subprocess.Popen(
        hostssh.tunnel_argv(host.lab, host.name, port, REMOTE_PORT),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def bound() -> str:
        if process.poll() is not None:
            assert process.stderr is not None
            pytest.fail(f"the tunnel's ssh exited: {process.stderr.read().decode()}")
        return subprocess.run(
            ["ss", "-N", campus, "-Hltn", f"sport = :{port}"], capture_output=True, text=True
        ).stdout

    try:
        wait_for(bound, lambda out: "127.0.0.1" in out, 60, "the tunnel's local end listening")
        yield port
    finally:
        process.kill()  # by its pid
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(host: daemonhost.Host, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Chromium on the workstation: the campus netns, where the tunnel listens."""
    executable = chromium_in_netns(host.lab.campus_ns, tmp_path_factory.mktemp("chromium"))
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(executable), args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[tuple[Page, Console]]:
    with watched_page(browser) as watched:
        yield watched


def notebook_url(port: int, remote: Remote, runbook: str) -> str:
    return f"http://127.0.0.1:{port}/lab/tree/notebooks/{runbook}.ipynb?token={remote.token}"


def virsh_networks(host: daemonhost.Host) -> dict[str, tuple[str, str]]:
    """``virsh net-list --all`` as the operator on the host: name -> (state, autostart)."""
    rc, out = ssh(host, "virsh -c qemu:///system net-list --all")
    assert rc == 0, out
    rows = [line.split() for line in out.splitlines()[2:] if line.strip()]
    return {r[0]: (r[1], r[2]) for r in rows}


def test_network_inventory_through_the_tunnel_shows_what_virsh_lists(
    host: daemonhost.Host, jupyterlab: Remote, tunnel: int, page: tuple[Page, Console]
) -> None:
    pg, _ = page
    open_and_run_all(pg, notebook_url(tunnel, jupyterlab, "network-inventory"))

    # the notebook's real-host defaults: nothing pre-filled for a lab
    uri = form_field(pg, "text", "libvirt_uri").locator("input")
    expect(uri).to_have_value("qemu:///system", timeout=KERNEL_WAIT)
    expect(form_field(pg, "text", "netns").locator("input")).to_have_value("")
    expect(last_result(pg)).to_contain_text(
        f"network-inventory on {host.name}", timeout=KERNEL_WAIT
    )
    table = result_table(pg, "networks")
    expect(table).to_be_visible()
    shot(pg, SHOTS, "01-network-inventory-over-the-tunnel")

    shown = {r["network"]: (r["active"], r["autostart"]) for r in table_rows(table)}
    listed = virsh_networks(host)
    assert listed, "virsh lists no network on the host"
    yes = {"True": "yes", "False": "no"}
    as_virsh = {
        name: ("active" if active == "True" else "inactive", yes[auto])
        for name, (active, auto) in shown.items()
    }
    assert as_virsh == listed

    save = widget_button(pg, "Save record")
    expect(save).to_be_enabled()
    save.click()
    saved = pg.get_by_text(re.compile(r"^Record: .*network-inventory"))
    expect(saved).to_be_visible(timeout=60_000)
    expect(save).to_be_disabled()
    saved.scroll_into_view_if_needed()
    shot(pg, SHOTS, "02-network-inventory-record-saved")

    # filed on the host, where the operator's own runs go, with the real-host defaults
    path = re.search(r"(/\S+\.ipynb)", saved.inner_text())
    assert path and path.group(1).startswith(jupyterlab.records + "/"), saved.inner_text()
    store = f"opsbook records --records {jupyterlab.records}"
    rc, index = ssh(host, f"{store} --runbook network-inventory -n 1")
    newest = re.search(rf"^(\d+)\s+\S+ \S+\s+network-inventory\s+{host.name}\s+ok\s", index, re.M)
    assert rc == 0 and newest, index
    rc, shown = ssh(host, f"{store} show {newest.group(1)}")
    assert rc == 0, shown
    record = re.search(rf"^record:\s+#{newest.group(1)} (\S+)$", shown, re.M)
    assert record, shown  # shown relative to the operator's directory, where records/ is
    home = posixpath.dirname(jupyterlab.records)
    assert posixpath.join(home, record.group(1)) == path.group(1), (record.group(1), path)
    assert re.search(r"^user:\s+operator$", shown, re.M), shown
    assert re.search(r'^  libvirt_uri\s+"qemu:///system"$', shown, re.M), shown
    assert re.search(r'^  netns\s+""$', shown, re.M), shown


def test_forward_bridge_plan_reads_the_hosts_interfaces_file(
    host: daemonhost.Host, jupyterlab: Remote, tunnel: int, page: tuple[Page, Console]
) -> None:
    pg, _ = page
    rc, interfaces = ssh(host, "cat /etc/network/interfaces")
    assert rc == 0, interfaces
    open_and_run_all(pg, notebook_url(tunnel, jupyterlab, "forward-bridge"))
    plan = pg.locator(
        ".jp-OutputArea-output h4", has_text=f"Plan for forward-bridge on {host.name}"
    )
    expect(plan).to_be_visible(timeout=KERNEL_WAIT)
    if "iface br0" in interfaces:  # an earlier module converted the host already
        expect(plan).to_contain_text("no changes")
    else:
        diff = pg.locator(".jp-OutputArea-output pre").filter(has_text="bridge_ports eth0").first
        expect(diff).to_contain_text("iface br0 inet dhcp")
        expect(diff).to_contain_text("iface eth0 inet manual")
        expect(widget_button(pg, "Apply")).to_be_enabled()
    shot(pg, SHOTS, "03-forward-bridge-plan")
    # nothing applied: the host's file is as it was
    assert ssh(host, "cat /etc/network/interfaces") == (0, interfaces)


def test_closing_the_session_stops_jupyterlab_on_the_host(
    host: daemonhost.Host, jupyterlab: Remote
) -> None:
    assert listening(host, REMOTE_PORT).strip()
    jupyterlab.session.process.kill()  # the operator's terminal goes away: by its pid
    jupyterlab.session.process.wait(timeout=30)
    wait_for(lambda: listening(host, REMOTE_PORT), lambda out: out.strip() == "", 120,
             "JupyterLab still listens on the host's 127.0.0.1:8888")  # fmt: skip
    wait_for(
        lambda: str(ssh(host, f"kill -0 {jupyterlab.pid}")[0]),
        lambda rc: rc != "0",
        60,
        f"JupyterLab (pid {jupyterlab.pid}) still runs on the host",
    )
