"""The booted daemon host's pure parts: image recipe and cache, mirror, SSH files, names."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from opslib.core.errors import HostError, InputError
from opslib.engine import catalog, runner
from opslib.lab.booted import daemonhost, rootfs, ssh
from opslib.lab.config import Lab

DEBIAN_SOURCES = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""


def test_the_recipe_hash_changes_with_the_package_list_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = rootfs.recipe_hash()
    assert rootfs.recipe_hash() == before
    assert rootfs.image_path(Path("/c")) == Path(f"/c/bookworm-{before}")
    monkeypatch.setattr(rootfs, "HOST_PACKAGES", (*rootfs.HOST_PACKAGES, "tcpdump"))
    assert rootfs.recipe_hash() != before


def test_the_recipe_hash_changes_with_the_in_image_script(monkeypatch: pytest.MonkeyPatch) -> None:
    before = rootfs.recipe_hash()
    monkeypatch.setattr(rootfs, "CONFIGURE", rootfs.CONFIGURE + "true\n")
    assert rootfs.recipe_hash() != before


def test_the_mirror_comes_from_the_deb822_stanza_of_the_suite() -> None:
    assert rootfs.mirror_deb822(DEBIAN_SOURCES) == "http://deb.debian.org/debian"
    assert rootfs.mirror_deb822(DEBIAN_SOURCES, "trixie") is None
    disabled = "Enabled: no\n" + DEBIAN_SOURCES
    assert rootfs.mirror_deb822(disabled) is None


def test_the_mirror_comes_from_a_one_line_entry_with_options() -> None:
    text = (
        "# deb http://old.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n"
    )
    assert rootfs.mirror_one_line(text) == "http://mirror.example/debian"
    assert rootfs.mirror_one_line("deb http://m.example/debian bookworm-updates main\n") is None


def test_mirror_reads_the_sources_in_order_and_names_the_fix(tmp_path: Path) -> None:
    deb822, one_line = tmp_path / "debian.sources", tmp_path / "sources.list"
    one_line.write_text("deb http://mirror.example/debian bookworm main\n")
    assert rootfs.mirror((deb822, one_line)) == "http://mirror.example/debian"
    deb822.write_text(DEBIAN_SOURCES)
    assert rootfs.mirror((deb822, one_line)) == "http://deb.debian.org/debian"
    with pytest.raises(HostError, match=r"no Debian bookworm mirror.*add one"):
        rootfs.mirror((tmp_path / "missing.sources",))


def _as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rootfs.os, "geteuid", lambda: 0)
    monkeypatch.setattr(rootfs.shutil, "which", lambda tool: f"/usr/bin/{tool}")


def test_preflight_names_the_missing_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _as_root(monkeypatch)
    monkeypatch.setattr(rootfs.shutil, "which", lambda tool: None if tool == "debootstrap" else "x")
    with pytest.raises(HostError, match="needs debootstrap: apt-get install debootstrap"):
        rootfs.preflight(tmp_path)
    monkeypatch.setattr(rootfs.shutil, "which", lambda t: None if t == "systemd-nspawn" else "x")
    with pytest.raises(HostError, match="apt-get install systemd-container"):
        rootfs.preflight(tmp_path)


def test_preflight_refuses_too_little_space_before_building(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _as_root(monkeypatch)
    monkeypatch.setattr(rootfs.shutil, "disk_usage", lambda _p: type("U", (), {"free": 2**20}))
    with pytest.raises(HostError, match=r"1 MiB free under .*1536 MiB needed"):
        rootfs.build(tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_a_host_that_would_find_no_inotify_instance_is_refused_naming_the_sysctl(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """At root's inotify limit a host's systemd exits at boot ("Too many open files"), as
    the tenth host of a lab did beside other labs: the room is checked first."""
    from opslib.lab.booted import nspawn

    limit = tmp_path / "max_user_instances"
    limit.write_text("1\n")  # this test's own process tree may hold none: 1 is too few
    monkeypatch.setattr(nspawn, "INOTIFY_LIMIT", limit)
    said = nspawn.inotify_room()
    assert said is not None and "fs.inotify.max_user_instances=1 in use" in said
    assert said.endswith("raise the limit: sysctl -w fs.inotify.max_user_instances=1024")
    limit.write_text("1000000\n")
    assert nspawn.inotify_room() is None


def test_an_interrupted_build_leaves_nothing_a_later_run_would_use(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _as_root(monkeypatch)

    def half_made(work: Path, _log: Path, _progress: object) -> None:
        (work / "usr" / "lib" / "systemd").mkdir(parents=True)
        (work / "usr" / "lib" / "systemd" / "systemd").write_text("")
        raise KeyboardInterrupt

    monkeypatch.setattr(rootfs, "_build_into", half_made)
    with pytest.raises(KeyboardInterrupt):
        rootfs.build(tmp_path, progress=lambda _l: None)
    assert rootfs.cached(tmp_path) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "build.log"]


def test_a_cached_image_is_not_built_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _as_root(monkeypatch)
    init = rootfs.image_path(tmp_path) / "usr" / "lib" / "systemd" / "systemd"
    init.parent.mkdir(parents=True)
    init.write_text("")
    monkeypatch.setattr(rootfs, "_build_into", lambda *_a: pytest.fail("built again"))
    image = rootfs.build(tmp_path)
    assert image.path == rootfs.image_path(tmp_path) and image.built_seconds is None


def test_hosts_take_fixed_campus_addresses_and_macs() -> None:
    lab = Lab(prefix="t1")
    host = daemonhost.Host(lab, "daemon1", 1)
    assert (host.address, host.mac) == ("192.0.2.20", "02:0b:01:00:00:01")
    assert daemonhost.Host(lab, "daemon2", 80).address == "192.0.2.99"
    names = ("t1-daemon1", "t1-daemon1", "dh-daemon1")
    assert (host.netns, host.machine, host.campus_port) == names


@pytest.mark.parametrize("name", ["host", "campus", "Daemon", "1st", "toolongname", ""])
def test_unusable_host_names_are_bad_input(name: str) -> None:
    with pytest.raises(InputError, match="host name"):
        daemonhost.check_name(name)


def test_ssh_files_check_host_keys_strictly_from_the_labs_own_file() -> None:
    lab = Lab(prefix="t1")
    known = [ssh.Known("daemon1", "192.0.2.20", "ssh-ed25519 AAAAC3Nz root@daemon1\n")]
    config = ssh.render_config(lab, known)
    block = config[config.index("Host daemon1") :]
    for line in (
        "HostName 192.0.2.20",
        "HostKeyAlias daemon1",
        "User operator",
        f"IdentityFile {lab.root}/ssh/id_ed25519",
        f"UserKnownHostsFile {lab.root}/ssh/known_hosts",
        "StrictHostKeyChecking yes",
        "GlobalKnownHostsFile /dev/null",
    ):
        assert f"  {line}\n" in block
    assert ssh.render_known_hosts(known) == "daemon1 ssh-ed25519 AAAAC3Nz\n"
    argv = ssh.ssh_argv(lab, "daemon1", ["opsbook", "run", "network-inventory"])
    assert argv[:4] == ["ip", "netns", "exec", "t1-campus"]
    assert argv[-2:] == ["daemon1", "opsbook run network-inventory"]


def test_an_installed_package_finds_its_runbooks_under_its_prefix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("OPSBOOK_NOTEBOOKS", raising=False)
    site = tmp_path / "lib" / "python3" / "site-packages" / "opslib"
    monkeypatch.setattr(catalog, "__file__", str(site / "engine" / "catalog.py"))
    installed = tmp_path / "share" / "opsbook" / "notebooks"
    installed.mkdir(parents=True)
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    assert catalog.notebooks_dir() == runner.notebooks_dir() == installed


def test_a_build_step_past_its_deadline_is_ended_and_names_the_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(rootfs, "STEP_TIMEOUT", 0.5)
    log = tmp_path / "build.log"
    pid_file = tmp_path / "pid"
    with pytest.raises(HostError, match=f"debootstrap took over 0s .*see {log}"):
        rootfs._step(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 60"], log, "debootstrap")
    assert not Path(f"/proc/{pid_file.read_text().strip()}").exists()


def test_a_lab_brought_up_again_gets_the_same_wheelhouse_without_a_build(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # lab down removes LAB/wheelhouse; a rebuilt one would get a new id (wheels are not
    # byte-for-byte reproducible), and the install kept for the old id would never match
    from opslib.lab.booted import install

    builds: list[str] = []

    def build(argv: list[str], what: str, timeout: float) -> None:
        out = Path(argv[1])
        out.mkdir(parents=True, exist_ok=True)
        (out / "opslib-0.1.0-py3-none-any.whl").write_text("wheel")
        (out / "wheelhouse.id").write_text(f"id-{len(builds)}\n")
        builds.append(what)

    monkeypatch.setattr(install, "_local", build)
    monkeypatch.setattr(install, "WHEELHOUSES", tmp_path / "kept")
    (tmp_path / "kept").mkdir()
    lab = Lab(prefix="obQ", base=tmp_path / "labs")
    first = (install.build_wheelhouse(lab) / "wheelhouse.id").read_text()
    install.shutil.rmtree(install.wheelhouse(lab))  # what lab down does
    again = install.build_wheelhouse(lab)
    assert (again / "wheelhouse.id").read_text() == first == "id-0\n"
    assert builds == ["building the wheelhouse"]
    assert (again / "opslib-0.1.0-py3-none-any.whl").is_file()


def _rows(libvirtd: str, host: str | None) -> list[dict[str, str]]:
    rows = [{"component": "daemon", "name": "libvirtd", "state": libvirtd, "detail": ""}]
    if host:
        rows.append({"component": "booted host", "name": "daemon1", "state": host, "detail": ""})
    return rows


@pytest.mark.parametrize(
    ("libvirtd", "host", "code"),
    [
        ("stopped", "running", 0),  # lab up: campus and a booted host, no simulated host
        ("stopped", "degraded", 0),  # booted, a unit failed: up, and the table says so
        ("running", None, 0),  # lab up --simulated
        ("stopped", "booting", 1),
        ("stopped", None, 1),
    ],
)
def test_lab_status_is_up_for_a_booted_host_or_the_simulated_one(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    libvirtd: str,
    host: str | None,
    code: int,
) -> None:
    from opslib.cli import main
    from opslib.lab import labstatus

    monkeypatch.setattr(labstatus, "status", lambda lab: _rows(libvirtd, host))
    assert main.main(["lab", "--prefix", "t1", "status"]) == code
    assert "libvirtd" in capsys.readouterr().out
