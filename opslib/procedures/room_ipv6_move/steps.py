"""room-ipv6-move's steps: each part of the move as actions with their undo and checks.

nat-bridge's renumbering and the tunnel's return are the actions of nat-bridge-ipv6 and
ipv6-tunnel themselves, run on a run of their own (their plans are parts of this one),
with one difference: here nothing is a point of no return. nat-bridge-ipv6 alone keeps a
network whose guests were slow to come back; in a move, a guest that does not come back
on the new /64 sends the whole host back where it was.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

from opslib.contract.transaction import Transaction
from opslib.core.actions import Action, Detail
from opslib.core.changes import Check
from opslib.core.ipv6prefix import gateway
from opslib.core.slaac import eui64_address
from opslib.host.cloudflare.dns import DnsRecord, same_content
from opslib.host.ifupdown import file_io
from opslib.procedures import ipv6_tunnel
from opslib.procedures import nat_bridge_ipv6 as nb
from opslib.procedures.room_ipv6_move.moves import TAKES_RA, TO_ROOM, Move, MovePlan


def _nothing(_detail: Detail) -> None:
    return None


def bridge_action(run: Transaction[Any, Any, Any], plan: MovePlan) -> Action:
    """The bridge takes the room's advertisements (or stops), the default route with it."""
    i, seen, side = run.inputs, run.observed, run.session.side
    bridge, tunnel_default = i.bridge, seen.tunnel.default_gateway
    prefixes = seen.advert.prefixes if seen.advert else ()

    def take(detail: Detail) -> None:
        side.set_accept_ra(bridge, TAKES_RA)
        if tunnel_default:
            side.drop_tunnel_default(i.tunnel)
            detail.append(f"default route via {i.tunnel} removed")
        now = side.wait_for_ra(bridge, prefixes, i.ra_wait)
        detail.append(f"{bridge}: {', '.join(now.addresses) or 'no address'}; "
                      f"default via {now.default_via or 'none'}")  # fmt: skip

    def took() -> list[Check]:
        now = side.taken(bridge)
        mine = [a for a in now.addresses if _in_any(a, prefixes)]
        return [
            Check.given(f"{bridge} has an address of the room's /64", bool(mine),
                        ", ".join(now.addresses) or "none", "is radvd running on the router?"),
            Check.given(f"default IPv6 route via the room router on {bridge}",
                        bool(now.default_via), now.default_via or "none",
                        "the router's RAs must have a router lifetime"),
        ]  # fmt: skip

    def take_back(detail: Detail) -> None:
        side.set_accept_ra(bridge, seen.accept_ra)
        detail.append(
            f"accept_ra {seen.accept_ra}; {side.forget(bridge)} RA address(es)/routes gone"
        )
        if tunnel_default:
            detail.append(side.restore_default(i.spec, seen.tunnel) or "default route as found")

    def leave(detail: Detail) -> None:
        side.set_accept_ra(bridge, 0)
        detail.append(f"accept_ra 0; {side.forget(bridge)} RA address(es)/routes gone")

    def leave_back(detail: Detail) -> None:
        side.set_accept_ra(bridge, seen.accept_ra)
        was = tuple(str(ipaddress.IPv6Interface(a).network) for a in seen.taken.addresses)
        now = side.wait_for_ra(bridge, was, i.ra_wait)
        detail.append(f"accept_ra {seen.accept_ra}; {', '.join(now.addresses) or 'no address'}")

    if plan.direction == TO_ROOM:
        return Action(f"{bridge} takes the room's RAs", take, take_back, check=took, partial=True)
    return Action(f"{bridge} stops taking the room's RAs", leave, leave_back, partial=True)


def persist_action(run: Transaction[Any, Any, Any], plan: MovePlan) -> list[Action]:
    path, before, after = run.inputs.interfaces_file, run.observed.interfaces_text, None
    after = plan.interfaces_after_bridge
    if after is None or after == before:
        return []

    def write(detail: Detail) -> None:
        if before is not None:
            detail.append(f"backup {file_io.backup(path)}")
        file_io.write_atomic(path, after or "")

    def back(detail: Detail) -> None:
        detail.append(file_io.put_back(path, before) or f"{path} as found")

    name = f"persist {run.inputs.bridge}'s accept_ra in {path}"
    return [Action(name, write, back, partial=True)]


def nat_actions(run: Transaction[Any, Any, Any], plan: MovePlan) -> list[Action]:
    """nat-bridge-ipv6's own actions for the new /64, none of them a point of no return."""
    if plan.nat is None or not plan.nat.changes:
        return []
    sub = Transaction(nat_inputs(run.inputs, plan.prefix), run.observed.nat, plan.nat,
              run.session.conn, run.result)  # fmt: skip
    run.share(sub)
    return [dataclasses.replace(a, commits=False) for a in nb.PROCEDURE.steps(sub)]


def nat_inputs(i: Any, prefix: str) -> nb.Inputs:
    return nb.Inputs(libvirt_uri=i.libvirt_uri, netns=i.netns, network=i.network,
                     prefix=prefix, replace_ipv6=True, timeout=i.timeout)  # fmt: skip


def tunnel_actions(run: Transaction[Any, Any, Any], plan: MovePlan) -> list[Action]:
    """ipv6-tunnel's own actions, the link's verification included; its health beyond the
    host is this runbook's own last check (through the tunnel, from the new /64)."""
    if plan.tunnel is None or not plan.tunnel.changes:
        return []
    state = run.observed.tunnel  # as planned: the file as the bridge's part leaves it
    if plan.interfaces_after_bridge is not None:
        state = dataclasses.replace(state, interfaces_text=plan.interfaces_after_bridge)
    tunnel_run = Transaction(run.inputs.tunnel_inputs(), state, plan.tunnel, None, run.result)
    return [a for a in ipv6_tunnel.PROCEDURE.steps(tunnel_run) if not a.advisory]


def through(run: Transaction[Any, Any, Any], plan: MovePlan, *, last: bool = False) -> Action:
    """The check that the guests' way out works: the kernel sends what comes from the new
    /64 out of the bridge (room router) or the tunnel, the address beyond answers a ping
    from PREFIX::1 (so the way back to the /64 is routed too), and each running guest
    answers at its new address."""
    i, side = run.inputs, run.session.side
    net = ipaddress.IPv6Network(plan.prefix)
    source, way = gateway(net), i.bridge if plan.direction == TO_ROOM else i.tunnel
    router = "the room router" if plan.direction == TO_ROOM else i.tunnel
    guests = [(t.domain, eui64_address(str(net), t.mac)) for t in run.observed.nat.taps if t.tap]

    def checked() -> list[Check]:
        dev = side.route_dev(i.probe, source)
        found = [Check.given(f"from {net} the way out is {way}", dev == way, dev or "no route",
                             f"check the default IPv6 route (via {router})")]  # fmt: skip
        if dev == way:
            ok = side.answers(i.probe, source=source)
            found.append(Check.given(f"{i.probe} answers {source} through {router}", ok,
                                     "answers" if ok else "no answer",
                                     f"does {router} route {net} to this host?"))  # fmt: skip
        for domain, address in guests:
            ok = side.answers(address, timeout=5.0)
            seen = "answers" if ok else "no answer"
            found.append(Check.given(f"{domain} answers at {address}", ok, seen, "is it up?"))
        if last and plan.direction == TO_ROOM:
            gone = side.tunnel_gone(i.tunnel)
            found.append(
                Check.given(f"{i.tunnel} is gone", gone, "gone" if gone else "still there")
            )
        return found

    name = f"the guests reach {i.probe} through {router}"
    return Action(("still: " if last else "") + name, _nothing, check=checked)


def record_actions(run: Transaction[Any, Any, Any], plan: MovePlan) -> list[Action]:
    """One update per record (undo: the record as it was), then a read-back."""
    if not plan.moves:
        return []
    client, zone_id = run.session.dns, run.observed.zone_id
    after: list[DnsRecord] = []

    def action(move: Move) -> Action:
        r = move.record
        spec = dataclasses.replace(r.spec, content=move.address)

        def do(_detail: Detail) -> None:
            client.update_record(zone_id, r.id, spec)

        def undo(_detail: Detail) -> None:
            client.update_record(zone_id, r.id, r.spec)

        return Action(f"AAAA {r.name} → {move.address}", do, undo,
                      undo_name=f"AAAA {r.name} back to {r.content}")  # fmt: skip

    def read_back(_detail: Detail) -> None:
        after[:] = client.list_records(zone_id, name="", type="AAAA")

    def checked() -> list[Check]:
        found = []
        for move in plan.moves:
            at = [r for r in after if r.name == move.record.name and r.type == "AAAA"]
            ok = len(at) == 1 and same_content("AAAA", at[0].content, move.address)
            seen = ", ".join(r.content for r in at) or "no AAAA"
            found.append(Check.given(f"AAAA {move.record.name} -> {move.address}", ok, seen,
                                     "apply again"))  # fmt: skip
        return found

    read = Action("read back the AAAA records", read_back, check=checked)
    return [*(action(m) for m in plan.moves), read]


def removal_action(run: Transaction[Any, Any, Any], plan: MovePlan) -> list[Action]:
    """The own tunnel goes, last: its unit (or link), and its stanza in the interfaces file."""
    i, seen, side = run.inputs, run.observed, run.session.side
    path = i.interfaces_file
    before = plan.interfaces_after_bridge if plan.interfaces_after_bridge is not None else (
        seen.interfaces_text
    )  # fmt: skip
    after = plan.interfaces_after_tunnel
    rewrite = after is not None and after != before
    if not plan.remove_tunnel and not rewrite:
        return []

    def remove(detail: Detail) -> None:
        side.remove_tunnel(plan.remove_tunnel, i.spec, i.run_dir)
        if rewrite:
            file_io.write_atomic(path, after or "")
            detail.append(f"`iface {i.tunnel} inet6` gone from {path}")

    def back(detail: Detail) -> None:
        if rewrite:
            detail.append(file_io.put_back(path, before) or f"{path} as before")
        side.put_tunnel_back(plan.remove_tunnel, i.spec, seen.tunnel, i.run_dir)
        detail.append(f"{i.tunnel} back as found")

    return [Action(f"remove the own tunnel {i.tunnel}", remove, back, partial=True)]


def _in_any(cidr: str, prefixes: tuple[str, ...]) -> bool:
    address = ipaddress.IPv6Interface(cidr).ip
    return any(address in ipaddress.IPv6Network(p) for p in prefixes)


def steps(run: Transaction[Any, Any, Any]) -> list[Action]:
    plan = run.plan
    if not isinstance(plan, MovePlan):  # the engine passes what make_plan made
        raise TypeError(f"room-ipv6-move's steps need a MovePlan, not {type(plan)}")
    bridge = [bridge_action(run, plan)] if plan.bridge_changes else []
    common = [*bridge, *persist_action(run, plan)]
    if plan.direction == TO_ROOM:
        return [
            *common, *nat_actions(run, plan), through(run, plan),
            *record_actions(run, plan), *removal_action(run, plan), through(run, plan, last=True),
        ]  # fmt: skip
    return [
        *common, *tunnel_actions(run, plan), *nat_actions(run, plan), through(run, plan),
        *record_actions(run, plan),
    ]  # fmt: skip


__all__ = ["nat_inputs", "steps"]
