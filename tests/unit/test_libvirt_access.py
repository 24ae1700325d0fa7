"""libvirt-access and its audit: the login file rules, the pure plan on /etc and home
fixtures in a temporary tree, bad input, undo, and the audit's report (the commands run
as the account replaced by what that account's files would make them say)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from opslib.contract import transaction
from opslib.core.changes import Plan, Result
from opslib.core.errors import HostError, InputError, UnknownName
from opslib.host.accounts import accounts, libvirt_login
from opslib.procedures import libvirt_access as la
from opslib.procedures import libvirt_access_audit as audit

URI = "qemu:///system"
# alice owns her files: as root any uid does; otherwise she is whoever runs the tests
ALICE = (1001, 1001) if os.geteuid() == 0 else (os.getuid(), os.getgid())
SKEL = "# ~/.profile: executed by the command interpreter for login shells.\nPATH=$HOME/bin:$PATH\n"


def tree(tmp_path: Path, *, passwd: str = "", group: str = "") -> Path:
    """/etc and /home of a Debian host in a temporary directory."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\n"
        "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
        "dnsmasq:x:999:65534:dnsmasq:/var/lib/misc:/usr/sbin/nologin\n"
        "operator:x:1000:37::/home/operator:/bin/bash\n"
        f"alice:x:{ALICE[0]}:{ALICE[1]}::/home/alice:/bin/bash\n"
        "toor:x:0:0::/root:/bin/bash\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n" + passwd
    )
    (etc / "group").write_text(
        "root:x:0:\noperator:x:37:\nsudo:x:27:operator\nlibvirt:x:105:operator\n"
        f"alice:x:{ALICE[1]}:\n" + group
    )
    (etc / "login.defs").write_text("UID_MIN\t\t\t 1000\nUID_MAX\t\t\t60000\n")
    for name in ("alice", "operator"):
        home = tmp_path / "home" / name
        home.mkdir(parents=True)
        (home / ".profile").write_text(SKEL)
        (home / ".profile").chmod(0o640)
    return tmp_path


def plan_for(root: Path, account: str = "alice", **kw: str) -> Plan:
    return transaction.plan(la.PROCEDURE, la.Inputs(account=account, root=str(root), **kw), "h")


# -- the login file ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shell", "existing", "expected"),
    [
        ("/bin/bash", set(), ".profile"),
        ("/bin/bash", {".profile"}, ".profile"),
        ("/bin/bash", {".bash_login", ".profile"}, ".bash_login"),
        ("/usr/bin/bash", {".bash_profile", ".bash_login", ".profile"}, ".bash_profile"),
        ("/bin/sh", {".bash_profile"}, ".profile"),
        ("/bin/dash", set(), ".profile"),
        ("/usr/bin/zsh", {".profile"}, ".zprofile"),
        ("/usr/bin/fish", {".profile"}, None),
        ("/bin/tcsh", set(), None),
    ],
)
def test_the_login_file_is_the_one_the_login_shell_reads(
    shell: str, existing: set[str], expected: str | None
) -> None:
    assert la.login_file(shell, existing) == expected


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (None, None),
        (SKEL, None),
        ("export LIBVIRT_DEFAULT_URI=qemu:///system\n", URI),
        ("export LIBVIRT_DEFAULT_URI='qemu:///system'  # the host's\n", URI),
        ('LIBVIRT_DEFAULT_URI="qemu:///session"\nexport LIBVIRT_DEFAULT_URI\n', "qemu:///session"),
        ("LIBVIRT_DEFAULT_URI=qemu:///system\n", None),  # not exported: virsh never sees it
        ("# export LIBVIRT_DEFAULT_URI=qemu:///system\n", None),
        ("export LIBVIRT_DEFAULT_URI=qemu:///system\nunset LIBVIRT_DEFAULT_URI\n", None),
        ("export LIBVIRT_DEFAULT_URI=qemu:///session\nLIBVIRT_DEFAULT_URI=qemu:///system\n", URI),
    ],
)
def test_exported_uri_reads_what_the_login_shell_leaves_exported(
    text: str | None, value: str | None
) -> None:
    assert la.exported_uri(text) == value


def test_the_line_is_appended_once_then_replaced_in_place() -> None:
    first = la.with_uri("PATH=/bin", URI)  # no newline at the end
    assert first == (
        f"PATH=/bin\n\n{libvirt_login.MARK}\nexport LIBVIRT_DEFAULT_URI=qemu:///system\n"
    )
    socket_uri = "qemu:///system?socket=/run/x sock"
    second = la.with_uri(first, socket_uri)
    assert second == first.replace(
        "export LIBVIRT_DEFAULT_URI=qemu:///system",
        "export LIBVIRT_DEFAULT_URI='qemu:///system?socket=/run/x sock'",
    )
    assert la.exported_uri(second) == socket_uri
    assert (
        la.with_uri(None, URI)
        == f"{libvirt_login.MARK}\nexport LIBVIRT_DEFAULT_URI=qemu:///system\n"
    )


def test_parse_net_list_takes_the_names_below_the_dashes() -> None:
    out = (
        " Name             State    Autostart   Persistent\n"
        "----------------------------------------------------\n"
        " default          active   yes         yes\n"
        " forward-bridge   active   yes         yes\n\n"
    )
    assert la.parse_net_list(out) == ("default", "forward-bridge")
    assert la.parse_net_list(" Name   State\n--------------\n\n") == ()


# -- the plan (pure, from fixtures) -----------------------------------------------------


def test_the_plan_adds_the_group_and_the_line_each_as_a_diff(tmp_path: Path) -> None:
    root = tree(tmp_path)
    plan = plan_for(root)
    group, profile = plan.changes
    assert (group.target, group.action) == ("group:libvirt", "update")
    assert "-libvirt:x:105:operator\n+libvirt:x:105:operator,alice\n" in group.diff
    assert (profile.target, profile.action) == (f"file:{root}/home/alice/.profile", "update")
    assert profile.before == SKEL
    assert (
        profile.after
        == f"{SKEL}\n{libvirt_login.MARK}\nexport LIBVIRT_DEFAULT_URI=qemu:///system\n"
    )
    assert "+export LIBVIRT_DEFAULT_URI=qemu:///system" in profile.diff
    assert plan == plan_for(root)  # the same each time, and nothing was written
    assert (root / "etc" / "group").read_text().count("alice") == 1


def test_nothing_to_do_once_the_group_and_the_file_say_so(tmp_path: Path) -> None:
    root = tree(tmp_path, group="")
    group_file = root / "etc" / "group"
    group_file.write_text(group_file.read_text().replace(":operator\n", ":operator,alice\n"))
    (root / "home/alice/.profile").write_text(SKEL + "export LIBVIRT_DEFAULT_URI=qemu:///system\n")
    plan = plan_for(root)
    assert plan.empty
    assert "alice is in group libvirt" in plan.notes


def test_bash_with_a_bash_profile_gets_the_line_there(tmp_path: Path) -> None:
    root = tree(tmp_path)
    (root / "home/alice/.bash_profile").write_text(". ~/.profile\n")
    (profile,) = [c for c in plan_for(root).changes if c.target.startswith("file:")]
    assert profile.target == f"file:{root}/home/alice/.bash_profile"


def test_a_new_login_file_is_planned_when_there_is_none(tmp_path: Path) -> None:
    root = tree(tmp_path)
    (root / "home/alice/.profile").unlink()
    (profile,) = [c for c in plan_for(root).changes if c.target.startswith("file:")]
    assert (profile.action, profile.before) == ("create", None)


def test_a_primary_group_counts_as_membership(tmp_path: Path) -> None:
    root = tree(tmp_path, passwd="carol:x:1002:105::/home/alice:/bin/sh\n")
    assert [c.target for c in plan_for(root, "carol").changes] == [
        f"file:{root}/home/alice/.profile"
    ]


@pytest.mark.parametrize(
    ("account", "kw", "message"),
    [
        ("root", {}, "parameter account (account): root is the superuser; name an unprivileged"),
        ("Alice!", {}, "account (account): 'Alice!' is not an account name"),
        ("", {}, "parameter account (account) needs a value"),
        ("alicia", {}, "no account named 'alicia'; did you mean alice?"),
        ("daemon", {}, "daemon is a system account (uid 1, shell /usr/sbin/nologin)"),
        ("nobody", {}, "nobody is a system account (uid 65534"),
        ("toor", {}, "toor has uid 0 (root)"),
        ("alice", {"group": "libvirtd"}, "no group libvirtd on h; install libvirt-daemon-system"),
    ],
)
def test_bad_input_is_one_line_before_any_change(
    tmp_path: Path, account: str, kw: dict[str, str], message: str
) -> None:
    root = tree(tmp_path)
    before = (root / "etc" / "group").read_text()
    with pytest.raises(InputError) as err:
        plan_for(root, account, **kw)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert (root / "etc" / "group").read_text() == before


def test_an_unknown_account_is_told_of_peoples_accounts_only(tmp_path: Path) -> None:
    with pytest.raises(UnknownName, match=r"no account named 'zed'; known: alice, operator$"):
        plan_for(tree(tmp_path), "zed")


def test_a_missing_home_a_foreign_shell_and_a_symlinked_file_are_refused(
    tmp_path: Path,
) -> None:
    root = tree(
        tmp_path,
        passwd="dave:x:1003:1003::/home/dave:/bin/bash\nfrank:x:1004:1004::/home/alice:/usr/bin/fish\n",
    )
    with pytest.raises(InputError, match=r"dave's home /home/dave does not exist; .*mkhomedir"):
        plan_for(root, "dave")
    with pytest.raises(InputError, match=r"login shell /usr/bin/fish does not read a POSIX"):
        plan_for(root, "frank")
    profile = root / "home/alice/.profile"
    profile.unlink()
    profile.symlink_to("/etc/shadow")
    with pytest.raises(InputError, match=r"\.profile is a symlink to /etc/shadow; opsbook writes"):
        plan_for(root)


# -- apply and undo (gpasswd and runuser replaced) ----------------------------------------


def fake_host(root: Path, monkeypatch: pytest.MonkeyPatch, *, networks: tuple[str, ...]) -> None:
    """gpasswd edits the tree's /etc/group; the account's virsh lists ``networks`` once its
    group and login file say so (what polkit and the login shell would make of them)."""
    group_file = root / "etc" / "group"

    def edit(group: str, account: str, add: bool) -> None:
        lines = []
        for line in group_file.read_text().splitlines():
            if line.startswith(f"{group}:"):
                members = [m for m in line.split(":")[3].split(",") if m and m != account]
                members += [account] if add else []
                line = f"{line.rsplit(':', 1)[0]}:{','.join(members)}"
            lines.append(line)
        group_file.write_text("\n".join(lines) + "\n")

    monkeypatch.setattr(accounts, "add_member", lambda g, a: edit(g, a, True))
    monkeypatch.setattr(accounts, "remove_member", lambda g, a: edit(g, a, False))
    monkeypatch.setattr(la, "probe", lambda account: probe_in(root, account, networks))
    monkeypatch.setattr(la, "host_networks", lambda uri: ["default", "forward-bridge"])


def probe_in(root: Path, account: str, networks: tuple[str, ...]) -> la.Probe:
    acct = accounts.accounts(str(root))[account]
    member = accounts.in_group(acct, accounts.groups(str(root))["libvirt"])
    login = la.login_file(acct.shell, {".profile"}) or ".profile"
    uri = la.exported_uri(accounts.read_file(accounts.home_path(str(root), acct) / login).text)
    if uri != URI:
        return la.Probe(uri, 0, (), " Name   State\n---------\n")  # its session libvirt
    if not member:
        return la.Probe(uri, 1, (), "error: authentication unavailable: no polkit agent")
    return la.Probe(uri, 0, networks, "")


def apply_for(root: Path) -> Result:
    inputs = la.Inputs(account="alice", root=str(root))
    plan = transaction.plan(la.PROCEDURE, inputs, "h")
    return transaction.apply(la.PROCEDURE, inputs, "h", reviewed=plan)


def test_apply_makes_both_then_verifies_and_a_second_is_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tree(tmp_path)
    fake_host(root, monkeypatch, networks=("default", "forward-bridge"))
    result = apply_for(root)
    assert (result.status, result.failed) == ("changed", False), result.summary
    assert result.summary.startswith(
        "alice manages qemu:///system: virsh net-list --all lists default, forward-bridge ("
    )
    profile = root / "home/alice/.profile"
    assert profile.stat().st_mode & 0o777 == 0o640  # the file keeps its mode
    assert "libvirt:x:105:operator,alice" in (root / "etc/group").read_text()
    again = apply_for(root)
    assert (again.status, again.changes, again.failed) == ("unchanged", [], False)
    assert "(nothing to change)" in again.summary


def test_a_failed_verification_puts_group_and_file_back_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tree(tmp_path)
    fake_host(root, monkeypatch, networks=("default",))  # forward-bridge is not listed
    group_before = (root / "etc/group").read_bytes()
    profile = root / "home/alice/.profile"
    before, mode = profile.read_bytes(), profile.stat().st_mode
    result = apply_for(root)
    assert result.status == "rolled back", result.summary
    failing = [c for c in result.checks if not c.ok]
    assert [c.name for c in failing] == ["virsh net-list --all as alice"]
    assert failing[0].seen == "lists default; not forward-bridge"
    assert (root / "etc/group").read_bytes() == group_before
    assert (profile.read_bytes(), profile.stat().st_mode) == (before, mode)


def test_undo_removes_a_login_file_it_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tree(tmp_path)
    (root / "home/alice/.profile").unlink()
    fake_host(root, monkeypatch, networks=())
    monkeypatch.setattr(la, "host_networks", lambda uri: ["default"])
    assert apply_for(root).status == "rolled back"
    assert not (root / "home/alice/.profile").exists()


def test_apply_on_this_host_needs_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = tree(tmp_path)
    plan = plan_for(root)
    on_this_host = dataclasses.replace(plan, inputs=la.Inputs(account="alice"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(HostError, match=r"^libvirt-access changes /etc/group .*run it as root"):
        la.apply(on_this_host, libvirt_uri=URI)


# -- what the account's tools report -----------------------------------------------------


def test_access_checks_name_what_is_missing() -> None:
    unset = la.access_checks("bob", URI, la.Probe(None, 0, (), ""), ["default"])
    assert [(c.status, c.seen) for c in unset] == [
        ("fail", "LIBVIRT_DEFAULT_URI is not set"),
        ("fail", "lists no networks; not default"),
    ]
    denied = la.Probe(URI, 1, (), "error: failed to connect to the hypervisor\nerror: no polkit")
    checks = la.access_checks("bob", URI, denied, ["default"])
    assert [(c.status, c.seen) for c in checks] == [
        ("ok", "LIBVIRT_DEFAULT_URI=qemu:///system"),
        ("fail", "failed: error: no polkit"),
    ]
    assert la.can_manage(
        la.access_checks("bob", URI, la.Probe(URI, 0, ("default",), ""), ["default"])
    )


# -- the audit ---------------------------------------------------------------------------


def audit_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tree(tmp_path, passwd="carol:x:1002:1002::/home/carol:/bin/sh\n")
    (root / "home/carol").mkdir()
    (root / "home/carol/.profile").write_text("export LIBVIRT_DEFAULT_URI=qemu:///system\n")
    group_file = root / "etc/group"
    group_file.write_text(group_file.read_text().replace("105:operator", "105:operator,carol"))
    fake_host(root, monkeypatch, networks=("default", "forward-bridge"))
    return root


def test_the_audit_of_a_group_fails_for_each_member_who_cannot_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = audit_tree(tmp_path, monkeypatch)
    result = audit.run(host="h", libvirt_uri=URI, members_of="libvirt", root=str(root))
    assert result.summary == (
        "1 of 2 accounts (the members of libvirt) cannot manage qemu:///system: "
        "operator (LIBVIRT_DEFAULT_URI is not set)"
    )
    assert [(c.name, c.status) for c in result.checks] == [
        ("carol manages qemu:///system", "ok"),
        ("operator manages qemu:///system", "fail"),
    ]
    assert result.failed
    fix = "sudo opsbook run libvirt-access -p account operator -p apply true"
    rows = {r["account"]: r for r in result.tables["accounts"]}
    assert rows["operator"]["fix"] == fix and rows["operator"]["can manage"] == "no"
    assert rows["carol"]["virsh net-list --all"] == "lists default, forward-bridge"


def test_the_audit_of_every_person_warns_and_names_who_is_not_in_the_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = audit_tree(tmp_path, monkeypatch)
    result = audit.run(host="h", libvirt_uri=URI, root=str(root))
    assert not result.failed
    assert [r["account"] for r in result.tables["accounts"]] == ["alice", "carol", "operator"]
    assert result.data["cannot"] == ["alice", "operator"]
    alice = next(c for c in result.checks if c.name.startswith("alice"))
    assert alice.status == "warn" and alice.seen.startswith("not in group libvirt; ")


def test_the_audit_refuses_an_unknown_group(tmp_path: Path) -> None:
    with pytest.raises(UnknownName, match="no group named 'sudoers'"):
        audit.run(host="h", libvirt_uri=URI, members_of="sudoers", root=str(tree(tmp_path)))
