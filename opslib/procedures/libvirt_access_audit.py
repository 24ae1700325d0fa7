"""libvirt-access-audit: which accounts cannot manage the system libvirt, and the fix.

Read-only. For every member of ``members_of`` (or, when it is empty, every person's
account: a uid in login.defs' UID_MIN..UID_MAX and a login shell), what libvirt-access
would verify: in ``group``, ``LIBVIRT_DEFAULT_URI`` in its login environment, and
``virsh net-list --all`` as the account (``runuser -l``, with ``LIBVIRT_AUTOSTART=0`` so
that no session libvirt is started for it) listing every network root sees. An account
that cannot is a failing check when it is a member of the named group (those are meant
to manage libvirt: the run exits 1, a schedule's failure hook hears of it), a warning
when every person's account is audited (most of those are not meant to).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from opslib.contract import inputs
from opslib.contract.inputs import param
from opslib.core.changes import Check, Result, Status
from opslib.core.errors import HostError, UnknownName
from opslib.core.shellcmd import command
from opslib.host.accounts import accounts
from opslib.procedures import libvirt_access as la

RUNBOOK = "libvirt-access-audit"


def row(
    name: str, member: bool, found: la.Probe, checks: list[Check], fix: str
) -> dict[str, object]:
    virsh = next(c for c in checks if c.name.startswith("virsh"))
    return {
        "account": name,
        "in group": "yes" if member else "no",
        la.VARIABLE: found.uri if found.uri is not None else "-",
        "virsh net-list --all": virsh.seen,
        "can manage": "yes" if la.can_manage(checks) else "no",
        "fix": "" if la.can_manage(checks) else fix,
    }


def reasons(member: bool, group: str, checks: list[Check]) -> str:
    why = [] if member else [f"not in group {group}"]
    failing = [c.seen for c in checks if not c.ok]
    # without the variable its virsh talks to its own session libvirt: that error says no more
    return "; ".join(why + failing[:1])


@dataclass(frozen=True, kw_only=True)
class Inputs(inputs.Declared):
    """The audit's parameters, each converted to its declared type (as by ``opsbook run``)."""

    libvirt_uri: str = inputs.libvirt_uri("the system libvirt the accounts should manage")
    group: str = param(
        "group", "the group libvirtd lets manage it (Debian's libvirt-daemon-system: libvirt)",
        "libvirt",
    )  # fmt: skip
    members_of: str = param(
        "group?", "audit the members of this group (empty: every person's account)", ""
    )
    root: str = "/"  # the tree /etc and the homes are read from (tests: a temporary one)


def _run(i: Inputs, host: str) -> Result:
    """Who can manage the system libvirt, and the fix for who cannot; read-only."""
    libvirt_uri, group, members_of, root = i.libvirt_uri, i.group, i.members_of, i.root
    known, groups = accounts.accounts(root), accounts.groups(root)
    if group not in groups:
        raise UnknownName("group", group, groups)
    if members_of and members_of not in groups:
        raise UnknownName("group", members_of, groups)
    if root == "/" and os.geteuid() != 0:
        raise HostError(
            f"the audit runs virsh as each account (runuser): run it as root "
            f"(sudo opsbook run {RUNBOOK} ...)"
        )
    uids = accounts.human_uids(root)
    if members_of:
        names = [n for n in accounts.group_members(groups[members_of], known)
                 if accounts.is_human(known[n], uids)]  # fmt: skip
        scope = f"the members of {members_of}"
    else:
        names = sorted(n for n, a in known.items() if accounts.is_human(a, uids))
        scope = "every person's account"
    # the members of a named group are meant to manage libvirt; everyone else may not be
    status: Status = "fail" if members_of else "warn"
    expected = la.host_networks(libvirt_uri)
    result = Result(RUNBOOK, host, "ok")
    rows, cannot = [], []
    for name in names:
        member = accounts.in_group(known[name], groups[group])
        fix = command(
            "sudo", "opsbook", "run", "libvirt-access", "-p", "account", name, "-p", "apply", "true"
        )
        found = la.probe(name)
        checks = la.access_checks(name, libvirt_uri, found, expected, fix=fix)
        rows.append(row(name, member, found, checks, fix))
        what = f"{name} manages {libvirt_uri}"
        if la.can_manage(checks):
            listed = ", ".join(found.networks) or "no networks"
            result.checks.append(Check(what, "ok", f"virsh lists {listed}"))
        else:
            why = reasons(member, group, checks)
            cannot.append(f"{name} ({why})")
            result.checks.append(Check(what, status, why, fix))
    result.add_table("accounts", rows, key=("account",))
    result.data = {
        "scope": scope,
        "networks": expected,
        "cannot": [r["account"] for r in rows if r["can manage"] == "no"],
    }
    if not names:
        result.summary = f"no accounts to audit: {scope} has no person's account"
    elif cannot:
        result.summary = (
            f"{len(cannot)} of {len(names)} accounts ({scope}) cannot manage {libvirt_uri}: "
            + ", ".join(cannot)
        )
    else:
        result.summary = f"all {len(names)} accounts ({scope}) manage {libvirt_uri}"
    return result


run = inputs.reading(Inputs, _run)

__all__ = ["RUNBOOK", "Inputs", "run"]
