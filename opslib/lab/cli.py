"""``opsbook lab image | up | down | status | netreg``: the lab daemon host."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from opslib.lab.config import Lab

BOOTED = ("running", "degraded")  # a booted host's systemctl is-system-running


def _progress(line: str) -> None:
    print(line, flush=True)


def _lab(args: argparse.Namespace) -> Lab:
    return Lab.from_env(args.prefix)


def _image(args: argparse.Namespace) -> int:
    from opslib.lab.simulated import image as guest_image  # lazy: keeps `opsbook` start fast

    lab = _lab(args)
    started = time.monotonic()
    built = guest_image.build_image(lab.image_dir, force=args.force, progress=_progress)
    print(f"guest image: kernel {built.kernel_version}, {built.kernel}, {built.initrd}")
    kind = "kvm" if guest_image.kvm_works(lab.image_dir) else "qemu (TCG: KVM does not boot here)"
    print(f"domain type: {kind} ({time.monotonic() - started:.1f}s)")
    return 0


def _up(args: argparse.Namespace) -> int:
    from opslib.core.errors import InputError

    if args.hosts < 0:
        raise InputError(f"lab up --hosts {args.hosts}: give a number of hosts, 1 or more")
    started = time.monotonic()
    lab = _lab(args)
    if args.simulated:
        if args.hosts or args.room_router:
            raise InputError(
                "lab up: --simulated boots no hosts; drop --hosts/--room-router or --simulated"
            )
        from opslib.lab.simulated import runs

        records = Path(args.records) if args.records else None
        runs.up(lab, configured=args.configured, progress=_progress, records=records)
    else:
        if args.records:
            raise InputError(
                "lab up: --records is for --simulated --configured (the booted host files "
                "its runs on itself: opsbook records there)"
            )
        from opslib.lab.booted import runs as hostruns

        hostruns.up(lab, count=args.hosts or 1, configured=args.configured,
                    room=args.room_router, say=_progress)  # fmt: skip
    print(f"lab up in {time.monotonic() - started:.0f} s")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from opslib.lab.booted import runs as hostruns
    from opslib.lab.simulated import runs

    return runs.cmd_demo(args) if args.simulated else hostruns.cmd_demo(args)


def _down(args: argparse.Namespace) -> int:
    from opslib.lab.simulated import control

    control.down(_lab(args), progress=_progress)
    return 0


def _status(args: argparse.Namespace) -> int:
    from opslib.lab import labstatus

    rows = labstatus.status(_lab(args))
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
    else:
        print(labstatus.format_table(rows))
    # up: the simulated host's libvirtd runs, or a booted host has booted
    simulated = {r["name"]: r["state"] for r in rows if r["component"] == "daemon"}
    booted = [r for r in rows if r["component"] == "booted host" and r["state"] in BOOTED]
    return 0 if simulated.get("libvirtd") == "running" or booted else 1


def _notebook(args: argparse.Namespace) -> int:
    from opslib.lab import notebook
    from opslib.records.store import default_root

    records = Path(args.records) if args.records else default_root()
    return notebook.serve(_lab(args), records=records, say=_progress)


def _netreg(args: argparse.Namespace) -> int:
    from opslib.lab.campus import netreg

    lab = _lab(args)
    if args.action == "add":
        changed = netreg.netreg_add(lab, args.mac)
        print(f"{args.mac}: {'registered' if changed else 'already registered'}")
    elif args.action == "remove":
        changed = netreg.netreg_remove(lab, args.mac)
        print(f"{args.mac}: {'unregistered' if changed else 'was not registered'}")
    else:
        leases = netreg.netreg_leases(lab)
        for mac in netreg.netreg_registered(lab):
            print(f"{mac}  {leases.get(mac, '-')}")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    """opsbook demo."""
    from opslib.cli.records import records_option

    p = sub.add_parser(
        "demo",
        help="bring the lab up and run every runbook on it",
        description="Bring the lab up bare, boot a Debian 12 daemon host on it and run every "
        "runbook in the wiki's order (and libvirt-access) there over SSH with the runbooks' "
        "real-host defaults and parameters/lab/, print a summary. --simulated: on the "
        "simulated host instead, with its sets (opslib.lab.simulated.sets, for "
        "$OPSBOOK_LAB_PREFIX).",
    )
    p.add_argument(
        "--simulated", action="store_true", help="run on the simulated host (no booted host)"
    )
    p.add_argument(
        "--parameters",
        metavar="DIR",
        help="with --simulated: a directory of parameter sets (default: the simulated "
        "host's, written under the lab's root)",
    )
    p.add_argument(
        "--keep", action="store_true", help="run on the lab as it is (default: rebuild it bare)"
    )
    records_option(p)
    p.set_defaults(func=_demo)


def _add_up(lab_sub: argparse._SubParsersAction) -> None:
    """opsbook lab up."""
    q = lab_sub.add_parser(
        "up", help="build the lab bare and boot its daemon host daemon1; again is harmless"
    )
    q.add_argument(
        "--configured",
        action="store_true",
        help="then run the demo's changing runbooks on daemon1 over SSH with parameters/lab "
        "(the demo's end state, from any state; each run filed as a record on the host)",
    )
    q.add_argument(
        "--hosts",
        type=int,
        default=0,
        metavar="N",
        help="boot N daemon hosts (daemon1..N, opsbook installed; default 1) and write "
        "their Ansible inventory, LAB/fleet/inventory.yml, for opsbook fleet run",
    )
    q.add_argument(
        "--room-router",
        action="store_true",
        help="daemon1 as the room router (at least 3 hosts): the broker delegates "
        "2001:db8:48::/48 to its tunnel, room-router runs there (radvd on campus, "
        "daemon2's /64 routed via daemon2); daemon3 keeps its own tunnel",
    )
    q.add_argument(
        "--simulated",
        action="store_true",
        help="the simulated host only (libvirtd in the lab's netns, no booted host); "
        "with --configured its runbooks run with the simulated host's sets",
    )
    q.add_argument(
        "--records",
        metavar="DIR",
        help="where --simulated --configured files its runs "
        "(default: $OPSBOOK_RECORDS or ./records)",
    )
    q.set_defaults(func=_up)


def add_parser(sub: argparse._SubParsersAction) -> None:
    _add_demo(sub)

    p = sub.add_parser(
        "lab",
        help="the lab daemon host (namespaces, libvirtd, NetReg, guests)",
        description="A whole daemon host built from real parts in network namespaces.",
    )
    p.add_argument(
        "--prefix",
        help="lab name prefix (default: $OPSBOOK_LAB_PREFIX or 'ob'); "
        "namespaces PREFIX-host/-campus/-he, files under /var/tmp/opsbook-lab/PREFIX",
    )
    lab_sub = p.add_subparsers(dest="lab_command", metavar="ACTION", required=True)

    q = lab_sub.add_parser("image", help="build the guest kernel + initramfs (once)")
    q.add_argument("--force", action="store_true", help="download and rebuild")
    q.set_defaults(func=_image)

    _add_up(lab_sub)

    q = lab_sub.add_parser("down", help="remove everything the lab made (keeps its log dir)")
    q.set_defaults(func=_down)

    q = lab_sub.add_parser("status", help="what is up, as a table (exit 1 when not up)")
    q.add_argument("--json", action="store_true", help="rows as JSON")
    q.set_defaults(func=_status)

    q = lab_sub.add_parser(
        "notebook",
        help="JupyterLab on 127.0.0.1 (random port, token) with the runbooks set for the lab",
    )
    q.add_argument(
        "--records",
        metavar="DIR",
        help="where interactive applies are filed (default: $OPSBOOK_RECORDS or ./records)",
    )
    q.set_defaults(func=_notebook)

    from opslib.lab.booted import cli

    cli.add_parser(lab_sub)

    q = lab_sub.add_parser("netreg", help="the lab's NetReg: list, add or remove a MAC")
    q.add_argument("action", choices=["list", "add", "remove"])
    q.add_argument("mac", nargs="?", help="MAC address (add/remove)")
    q.set_defaults(func=_netreg_checked)


def _netreg_checked(args: argparse.Namespace) -> int:
    if args.action != "list" and not args.mac:
        from opslib.core.errors import InputError

        raise InputError(f"lab netreg {args.action} needs a MAC, e.g. 52:54:00:0b:01:03")
    return _netreg(args)
