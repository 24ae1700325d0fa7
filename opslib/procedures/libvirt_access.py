"""libvirt-access: the wiki's "properly configured user account" for ``virsh net-list``.

An unprivileged account manages the system libvirt when

- it is in the group libvirtd admits (Debian's ``libvirt-daemon-system``: ``libvirt``; its
  polkit rule lets that group's members manage ``qemu:///system`` without a password), and
- its login environment says ``LIBVIRT_DEFAULT_URI=qemu:///system`` (else virsh, as
  anyone but root, talks to the account's own ``qemu:///session``, which has no networks).

Where the variable goes: the login file of that one account, the one its login shell
reads (``~/.profile``; bash reads ``~/.bash_profile`` or ``~/.bash_login`` instead when
there is one; zsh ``~/.zprofile``). Per account, not ``/etc/profile.d/``: only the
accounts granted access get the system URI (a global file would also move everyone
else's virsh off their session libvirt, and stay after an account left the group).
Login files, not ``~/.config/environment.d``: that one is read by the systemd user
manager only, not by SSH logins, ``su -`` or ``runuser -l``; ``~/.pam_environment`` is
ignored by Debian 12's PAM. The file is replaced atomically, as the account's own file
with its mode, and never written through a symlink.

The verification is what the account's own tools report: ``runuser -l ACCOUNT`` (its
login environment) prints ``LIBVIRT_DEFAULT_URI`` and runs ``virsh net-list --all``,
which must list every network root sees at ``libvirt_uri``.

On opslib.contract.transaction: add to the group (undo ``gpasswd -d``), write the login file
(undo: the file as it was, or none), verify. The read-only audit of many accounts is
:mod:`opslib.procedures.libvirt_access_audit`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from opslib.contract import inputs, transaction
from opslib.contract.inputs import param
from opslib.contract.transaction import Procedure, Transaction
from opslib.core.actions import Action, Detail
from opslib.core.changes import Change, Check, Plan
from opslib.core.errors import HostError, InputError, UnknownName
from opslib.core.shellcmd import command
from opslib.host.accounts import accounts
from opslib.host.accounts.accounts import Account, FileState, Group
from opslib.host.accounts.libvirt_login import (
    LOGIN_FILES,
    VARIABLE,
    exported_uri,
    login_file,
    uri_line,
    with_uri,
)
from opslib.host.libvirt import virt

RUNBOOK = "libvirt-access"


@dataclass(frozen=True, kw_only=True)
class Inputs(inputs.Declared):
    """Each field converted to its declared type (an account name that is not root, a
    group name): the same check as ``opsbook run``'s, before anything is read."""

    libvirt_uri: str = inputs.libvirt_uri("the system libvirt the account is to manage")
    account: str = param("account", "the unprivileged account to set up")
    group: str = param(
        "group", "the group libvirtd lets manage it (Debian's libvirt-daemon-system: libvirt)",
        "libvirt",
    )  # fmt: skip
    root: str = "/"  # the tree /etc and the homes are read from (tests: a temporary one)


@dataclass(frozen=True)
class Observed:
    account: Account | None
    known: tuple[str, ...]  # people's accounts (what an unknown name is told of)
    uids: tuple[int, int]  # people's accounts: login.defs' UID_MIN..UID_MAX
    group: Group | None
    home_is_dir: bool
    login_files: tuple[str, ...]  # which of the shells' login files exist in the home
    login: FileState | None  # the one the account's login shell reads


# --- plan (pure) --------------------------------------------------------------------------
def make_plan(inputs: Inputs, obs: Observed, host: str) -> Plan:
    """Observed state in, plan out; InputError for any account this is not for."""
    name, group = inputs.account, inputs.group
    acct = obs.account
    if acct is None:
        raise UnknownName("account", name, obs.known)
    if acct.uid == 0:
        raise InputError(f"{name} has uid 0 (root); name an unprivileged account")
    if not accounts.is_human(acct, obs.uids):
        raise InputError(
            f"{name} is a system account (uid {acct.uid}, shell {acct.shell or '-'}); "
            f"libvirt-access is for people's accounts (uid {obs.uids[0]}-{obs.uids[1]} "
            "with a login shell)"
        )
    if obs.group is None:
        raise InputError(
            f"no group {group} on {host}; install libvirt-daemon-system (its group is "
            "libvirt), or name the group libvirtd admits (-p group NAME)"
        )
    if not obs.home_is_dir:
        raise InputError(
            f"{name}'s home {acct.home} does not exist; create it (mkhomedir_helper {name})"
        )
    file_name = login_file(acct.shell, obs.login_files)
    if file_name is None or obs.login is None:
        raise InputError(
            f"{name}'s login shell {acct.shell} does not read a POSIX login file; set "
            f"{uri_line(inputs.libvirt_uri)} in its own login files by hand"
        )
    login = obs.login
    if login.link:
        raise InputError(
            f"{login.path} is a symlink to {login.link}; opsbook writes no file through a "
            f"link as root: add `{uri_line(inputs.libvirt_uri)}` there yourself"
        )
    changes, notes = [], []
    if not accounts.in_group(acct, obs.group):
        changes.append(
            Change(
                f"group:{group}",
                "update",
                f"add {name} to group {group} ({command('gpasswd', '-a', name, group)})",
                before=obs.group.line + "\n",
                after=accounts.with_member(obs.group.line, name) + "\n",
            )
        )
        notes.append(f"{name}'s sessions running now keep their groups: log in again after")
    else:
        notes.append(f"{name} is in group {group}")
    shell = os.path.basename(acct.shell)
    current = exported_uri(login.text)
    if current != inputs.libvirt_uri:
        changes.append(
            Change(
                f"file:{login.path}",
                "create" if login.text is None else "update",
                f"{uri_line(inputs.libvirt_uri)} in ~{name}/{file_name}, "
                f"the login file {shell} reads",
                before=login.text,
                after=with_uri(login.text, inputs.libvirt_uri),
            )
        )
        if current is not None:
            notes.append(
                f"~{name}/{file_name} sets {VARIABLE}={current} now; the line overrides it"
            )
    else:
        notes.append(f"~{name}/{file_name} exports {VARIABLE}={current}")
    data = {
        "account": name,
        "group": group,
        "login_file": login.path,
        "libvirt_uri": inputs.libvirt_uri,
    }
    return Plan(RUNBOOK, host, tuple(changes), tuple(notes), data)


# --- what the account's tools report -------------------------------------------------
@dataclass(frozen=True)
class Probe:
    """What the account's login environment and ``virsh net-list --all`` there report."""

    uri: str | None  # LIBVIRT_DEFAULT_URI in its login environment
    returncode: int
    networks: tuple[str, ...]
    output: str  # virsh's output (its error when it failed)


def parse_net_list(text: str) -> tuple[str, ...]:
    """The network names of ``virsh net-list``'s table (rows below the dashes)."""
    lines = text.splitlines()
    start = next((i + 1 for i, ln in enumerate(lines) if set(ln.strip()) == {"-"}), len(lines))
    return tuple(ln.split()[0] for ln in lines[start:] if ln.strip())


def probe(account: str) -> Probe:
    """Run as the account, in its login environment. LIBVIRT_AUTOSTART=0: a virsh that
    would fall back to the session libvirt fails at once instead of starting one."""
    env = accounts.run_as(account, f"printenv {VARIABLE}")
    lines = env.stdout.strip().splitlines()
    uri = lines[-1].strip() if env.returncode == 0 and lines else None
    ran = accounts.run_as(account, "virsh net-list --all", env={"LIBVIRT_AUTOSTART": "0"})
    if ran.returncode == 0:
        return Probe(uri, 0, parse_net_list(ran.stdout), ran.stdout)
    return Probe(uri, ran.returncode, (), (ran.stderr.strip() or ran.stdout.strip()))


def host_networks(libvirt_uri: str) -> list[str]:
    """The networks root sees: what the account must see too."""
    with virt.connect(libvirt_uri) as conn:
        return sorted(n.name for n in virt.list_networks(conn))


def _error_line(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or ["no output"])[-1]


def access_checks(
    account: str, uri: str, found: Probe, expected: list[str], *, fix: str = ""
) -> list[Check]:
    """Its login environment names ``uri``; its virsh lists every network in ``expected``."""
    again = fix or f"log in again as {account}: group changes apply to new logins"
    env_ok = found.uri == uri
    missing = [n for n in expected if n not in found.networks]
    listed = ", ".join(found.networks) or "no networks"
    if found.returncode != 0:
        seen = f"failed: {_error_line(found.output)}"
    else:
        seen = f"lists {listed}" + (f"; not {', '.join(missing)}" if missing else "")
    return [
        Check(
            f"{account}'s login environment",
            "ok" if env_ok else "fail",
            f"{VARIABLE}={found.uri}" if found.uri is not None else f"{VARIABLE} is not set",
            "" if env_ok else fix or f"{uri_line(uri)} in {account}'s login file",
        ),
        Check(
            f"virsh net-list --all as {account}",
            "ok" if found.returncode == 0 and not missing else "fail",
            seen,
            "" if found.returncode == 0 and not missing else again,
        ),
    ]


def can_manage(checks: list[Check]) -> bool:
    return all(c.ok for c in checks)


# --- the procedure ----------------------------------------------------------------------
def _observe(inputs: Inputs) -> Observed:
    root = inputs.root
    known = accounts.accounts(root)
    acct = known.get(inputs.account)
    group = accounts.groups(root).get(inputs.group)
    home_is_dir, login = False, None
    existing: tuple[str, ...] = ()
    if acct is not None:
        home = accounts.home_path(root, acct)
        home_is_dir = home.is_dir() and not home.is_symlink()
        if home_is_dir:
            existing = tuple(f for f in LOGIN_FILES if os.path.lexists(home / f))
            name = login_file(acct.shell, existing)
            if name is not None:
                login = accounts.read_file(home / name)
    uids = accounts.human_uids(root)
    people = tuple(sorted(n for n, a in known.items() if accounts.is_human(a, uids)))
    return Observed(acct, people, uids, group, home_is_dir, existing, login)


@dataclass
class Probed:
    """What the account's virsh saw, shared by the verify step and finish."""

    probe: Probe | None = None
    expected: list[str] = field(default_factory=list)  # the networks root sees


class LibvirtAccess(Procedure[Inputs, Observed, None]):
    name = RUNBOOK
    inputs = Inputs

    def observe(self, inputs: Inputs, session: None) -> Observed:
        return _observe(inputs)

    def plan(self, inputs: Inputs, observed: Observed, host: str) -> Plan:
        return make_plan(inputs, observed, host)

    def check_host(self, inputs: Inputs) -> None:
        """As root: gpasswd, another account's home, and runuser to verify."""
        if inputs.root == "/" and os.geteuid() != 0:
            raise HostError(
                "libvirt-access changes /etc/group and another account's home, and verifies "
                f"as that account (runuser): run it as root (sudo opsbook run {RUNBOOK} ...)"
            )

    def steps(self, tx: Transaction[Inputs, Observed, None]) -> list[Action]:
        i, obs, targets = tx.inputs, tx.observed, {c.target for c in tx.plan.changes}
        probed = tx.share(Probed())
        actions = []
        if f"group:{i.group}" in targets:

            def add(detail: Detail) -> None:
                accounts.add_member(i.group, i.account)
                detail.append(command("gpasswd", "-a", i.account, i.group))

            def remove(detail: Detail) -> None:
                accounts.remove_member(i.group, i.account)
                detail.append(command("gpasswd", "-d", i.account, i.group))

            def member() -> list[Check]:
                now = accounts.groups(i.root).get(i.group)
                ok = now is not None and i.account in now.members
                seen = now.line if now is not None else f"no group {i.group}"
                return [Check(f"{i.account} in group {i.group}", "ok" if ok else "fail", seen)]

            actions.append(Action(f"add {i.account} to group {i.group}", add, remove, member))
        login = obs.login
        if login is not None and f"file:{login.path}" in targets:
            acct = obs.account
            assert acct is not None
            text = with_uri(login.text, i.libvirt_uri)
            # a new file is the account's own, as its shell's skeleton files are
            mode, uid, gid = (
                (0o644, acct.uid, acct.gid) if login.text is None
                else (login.mode, login.uid, login.gid)
            )  # fmt: skip

            def write(detail: Detail) -> None:
                accounts.write_file(login.path, text, mode=mode, uid=uid, gid=gid)
                detail.append(f"{login.path}: {uri_line(i.libvirt_uri)}")

            def put_back(detail: Detail) -> None:
                detail.append(accounts.put_back(login) or f"{login.path}: still none")

            def written() -> list[Check]:
                now = accounts.read_file(login.path)
                ok = exported_uri(now.text) == i.libvirt_uri
                seen = f"exports {VARIABLE}={exported_uri(now.text)}"
                return [Check(f"{login.path} sets {VARIABLE}", "ok" if ok else "fail", seen)]

            actions.append(Action(f"write {login.path}", write, put_back, written))

        def verify(detail: Detail) -> None:
            probed.expected = host_networks(i.libvirt_uri)
            probed.probe = found = probe(i.account)
            detail.append(f"{VARIABLE}={found.uri}; rc {found.returncode}")

        def checks() -> list[Check]:
            assert probed.probe is not None  # verify ran
            return access_checks(i.account, i.libvirt_uri, probed.probe, probed.expected)

        actions.append(Action(f"virsh net-list --all as {i.account}", verify, check=checks))
        return actions

    def finish(self, tx: Transaction[Inputs, Observed, None]) -> None:
        i, result, applied = tx.inputs, tx.result, tx.applied
        probed = tx.shared(Probed)
        found = probed.probe
        if found is not None:
            result.add_table(
                f"virsh net-list --all as {i.account}",
                [{"network": n, "root sees it": n in probed.expected} for n in found.networks],
                key=("network",),
            )
            result.data["probe"] = {"uri": found.uri, "returncode": found.returncode,
                                    "networks": list(found.networks)}  # fmt: skip
        if not applied.ok:
            result.summary = transaction.failure_summary(applied)
            return
        listed = ", ".join(found.networks) if found and found.networks else "no networks"
        done = ", ".join(
            f"added to group {i.group}" if c.target.startswith("group:")
            else f"{VARIABLE} in {c.target.removeprefix('file:')}"
            for c in result.changes
        )  # fmt: skip
        result.summary = (
            f"{i.account} manages {i.libvirt_uri}: virsh net-list --all lists {listed}"
            + (f" ({done})" if done else " (nothing to change)")
        )


PROCEDURE = LibvirtAccess()
plan, apply = inputs.verbs(PROCEDURE)


__all__ = [
    "PROCEDURE",
    "RUNBOOK",
    "Inputs",
    "Observed",
    "Probe",
    "access_checks",
    "apply",
    "exported_uri",
    "login_file",
    "make_plan",
    "parse_net_list",
    "plan",
    "probe",
    "with_uri",
]
