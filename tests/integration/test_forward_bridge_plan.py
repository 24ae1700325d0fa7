"""The forward-bridge planner, pure: observed files + link facts + libvirt network in, Plan out."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support import INTERFACES_CORPUS, REPO, throwaway_netns

from opslib.core.errors import HostError, InputError
from opslib.host.ifupdown import file_io, source_tree
from opslib.host.ifupdown.network_restart import DEFAULT_RESTART, restart_argv
from opslib.host.libvirt import netxml, virt
from opslib.host.libvirt.netxml import bridge_network
from opslib.procedures import forward_bridge as fb
from opslib.procedures.forward_bridge.kernel import LinkFacts, check_links

CORPUS = INTERFACES_CORPUS
CASES = sorted(p.name for p in CORPUS.iterdir() if p.is_dir())
MAIN = "/etc/network/interfaces"
PHYSICAL = {
    "lo": LinkFacts("lo", "loopback", ""),
    "eth0": LinkFacts("eth0", "", ""),
}
CONVERTED_LINKS = {
    **PHYSICAL,
    "eth0": LinkFacts("eth0", "", "br0"),
    "br0": LinkFacts("br0", "bridge", ""),
}
GOOD_NET_XML = (
    "<network><name>forward-bridge</name><uuid>6a8f3c52-0d4e-4b55-9a55-3c1f0e8b9d11</uuid>"
    "<forward mode='bridge'/><bridge name='br0'/></network>"
)


def params(**kw: str) -> fb.Inputs:
    return fb.Inputs(
        **{"libvirt_uri": "test:///default", "netns": "", "interfaces_file": MAIN, **kw}
    )


def case_texts(case: str) -> dict[str, str]:
    root = CORPUS / case
    return {
        str(p): p.read_bytes().decode()
        for p in root.rglob("*")
        if p.is_file() and "expected" not in p.relative_to(root).parts and p.name != "refuse"
    }


def observed(texts: dict[str, str], main: str = MAIN, links=None, network=None) -> fb.Observed:
    return fb.Observed(
        source_tree.tree_from_texts(main, texts), PHYSICAL if links is None else links, network
    )


def net(xml: str = GOOD_NET_XML, **state: bool) -> netxml.Network:
    return netxml.parse_network(
        xml, **{"active": True, "autostart": True, "persistent": True, **state}
    )


# -- the corpus: golden results, and ifupdown accepts every result ------------------------


@pytest.mark.parametrize("case", CASES)
def test_plan_on_every_corpus_file_matches_its_golden_result(case: str, tmp_path: Path) -> None:
    root = CORPUS / case
    main = str(root / "interfaces")
    texts = case_texts(case)
    if (root / "refuse").exists():  # refused when reading the files or when planning
        with pytest.raises(InputError, match=(root / "refuse").read_text().strip()) as info:
            fb.make_plan(params(interfaces_file=main), observed(texts, main), "h")
        assert "\n" not in str(info.value)
        return
    plan = fb.make_plan(params(interfaces_file=main), observed(texts, main), "h")
    expected = {
        str(root / p.relative_to(root / "expected")): p.read_bytes().decode()
        for p in (root / "expected").rglob("*")
        if p.is_file()
    } if (root / "expected").exists() else {}  # fmt: skip
    assert plan.new_files == expected
    file_changes = [c for c in plan.changes if c.target.startswith("file:")]
    assert {c.target[5:] for c in file_changes} == set(expected)
    assert all(c.diff.startswith("--- a/") for c in file_changes)
    # eth0 is no bridge port in PHYSICAL: networking restarts whether or not a file changes
    assert any(c.action == "restart" for c in plan.changes)
    if expected and shutil.which("ifup"):
        # the new files as a whole tree: ifupdown must accept br0 from them
        for path, text in {**texts, **expected}.items():
            dest = tmp_path / os.path.relpath(path, root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(text.encode())
        done = subprocess.run(
            ["ifup", "--no-act", "-i", str(tmp_path / "interfaces"),
             "--state-dir", str(tmp_path / "state"), "br0"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "bridge_ports" not in done.stderr


def _copy_case(case: str, dest: Path, planned: bool) -> Path:
    """The case's files (with what the planner makes of them over them) under ``dest``;
    its main file. Absolute sources would read this machine's /etc: they point into the copy."""
    root = CORPUS / case
    texts = case_texts(case)
    if planned:
        main = str(root / "interfaces")
        plan = fb.make_plan(params(interfaces_file=main), observed(texts, main), "h")
        texts |= plan.new_files
    for path, text in texts.items():
        target = dest / os.path.relpath(path, root)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(text.replace("/etc/network/interfaces.d/*", "interfaces.d/*").encode())
    return dest / "interfaces"


def _ifup_no_act(main: Path, state: Path) -> list[tuple[str, list[str]]]:
    """What ``ifup -a`` (then ``--allow=hotplug``) would run, per interface, in order.

    --no-act only prints the commands (but still runs mapping scripts: --no-mappings);
    the state directory must stay empty."""
    state.mkdir(exist_ok=True)
    blocks: list[tuple[str, list[str]]] = []
    for extra in ([], ["--allow=hotplug"]):
        done = subprocess.run(
            ["ifup", "--no-act", "--no-mappings", "-v", "-a", *extra, "-i", str(main),
             "--state-dir", str(state)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout
        for line in done.stdout.splitlines():
            m = re.match(r"ifup: configuring interface (\S+)=\S+ \(", line)
            if m:
                blocks.append((m[1], []))
            elif line.strip() and blocks:
                blocks[-1][1].append(line.strip())
    assert not any(state.iterdir()), "ifup --no-act wrote state"
    return blocks


@pytest.mark.skipif(shutil.which("ifup") is None, reason="ifupdown is in debian-packages.txt")
@pytest.mark.parametrize("case", [c for c in CASES if (CORPUS / c / "expected").exists()])
def test_ifup_still_runs_what_it_ran_for_the_uplink(case: str, tmp_path: Path) -> None:
    """ifup -a on the planned files runs every command it ran for eth0 on the original:
    its hooks and link options on eth0 itself (bridge-utils never runs ifup on a port),
    its addressing on br0; and when eth0 still has such lines, it comes up before br0."""
    before = _ifup_no_act(_copy_case(case, tmp_path / "before", False), tmp_path / "s1")
    after = _ifup_no_act(_copy_case(case, tmp_path / "after", True), tmp_path / "s2")
    on_uplink = [line for name, lines in after if name == "eth0" for line in lines]
    on_bridge = [line for name, lines in after if name == "br0" for line in lines]
    for line in (line for name, lines in before if name == "eth0" for line in lines):
        link = re.fullmatch(r"ip link set dev eth0 (.*) up", line)
        if link:  # static/dhcp set mtu and MAC with "up" in one line, manual one by one
            words = link[1].split()
            wanted = [
                f"ip link set dev eth0 {k} {v}"
                for k, v in zip(words[::2], words[1::2], strict=False)
            ]
            assert all(w in on_uplink for w in wanted), (line, on_uplink)
            continue  # the "up" itself: bridge-utils ups its port
        if line.startswith("ip link set dev eth0 up"):
            continue
        renamed = line.replace("eth0", "br0")
        assert line in on_uplink or line in on_bridge or renamed in on_bridge, (line, after)
    if "eth0" in source_tree.load_tree(str(tmp_path / "after" / "interfaces")).classes()["auto"]:
        names = [name for name, _lines in after]
        assert names.index("eth0") < names.index("br0"), names


def test_the_uplinks_hooks_keep_it_in_its_auto_line_ahead_of_the_bridge() -> None:
    hooks = "\tpre-up ip link set dev eth0 mtu 9000\n\tpost-up ethtool -K eth0 tso off\n"
    texts = {MAIN: f"auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n{hooks}"}
    plan = fb.make_plan(params(), observed(texts), "h")
    assert plan.new_files[MAIN] == (
        "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet manual\n"
        f"{hooks}\nauto br0\niface br0 inet dhcp\n\tbridge_ports eth0\n\tbridge_stp off\n"
    )
    (note,) = [n for n in plan.notes if "keeps its" in n]
    assert note.startswith(
        "eth0 keeps its pre-up, post-up lines and stays in its auto line (/etc/network/"
        "interfaces:4) so that ifup still runs them"
    )
    assert "ifup -a brings eth0 up before br0" in note
    # an eth0 whose auto line comes after the bridge's moves into the bridge's line
    texts = {MAIN: "auto br0\niface br0 inet manual\n\tbridge_ports none\n\n"
                   f"iface eth0 inet dhcp\n{hooks}auto eth0\n"}  # fmt: skip
    after = fb.make_plan(params(), observed(texts), "h").new_files[MAIN]
    assert after.startswith("auto eth0 br0\niface br0 inet dhcp\n")
    assert after.endswith(f"iface eth0 inet manual\n{hooks}")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a throwaway network namespace")
def test_ifup_no_act_touches_nothing(tmp_path: Path) -> None:
    """The validation the tests (and apply) rely on: links, addresses, state stay as they were."""
    with throwaway_netns("na", "link add eth0 type veth peer name peer0") as netns:

        def state() -> str:
            show = ["ip", "-n", netns, "-d", "-o"]
            return "".join(
                subprocess.run([*show, what, "show"], capture_output=True, text=True,
                               check=True).stdout for what in ("link", "addr", "route")
            )  # fmt: skip

        seen = state()
        main = _copy_case("31-uplink-hooks-auto-after-bridge", tmp_path / "after", True)
        done = subprocess.run(
            ["ip", "netns", "exec", netns, "ifup", "--no-act", "-a", "-i", str(main),
             "--state-dir", str(tmp_path / "state")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "ethtool -K eth0 tso off" in done.stderr  # printed, not run
        assert state() == seen
        assert not (tmp_path / "state").exists() or not any((tmp_path / "state").iterdir())


@pytest.mark.parametrize("case", [c for c in CASES if (CORPUS / c / "expected").exists()])
def test_planning_again_on_the_result_changes_nothing(case: str) -> None:
    root = CORPUS / case
    main = str(root / "interfaces")
    texts = case_texts(case)
    for p in (root / "expected").rglob("*"):
        if p.is_file():
            texts[str(root / p.relative_to(root / "expected"))] = p.read_bytes().decode()
    plan = fb.make_plan(
        params(interfaces_file=main), observed(texts, main, CONVERTED_LINKS, net()), "h"
    )
    assert plan.empty, [c.summary for c in plan.changes]


def test_bare_dhcp_host_plan_shows_the_wiki_stanza_as_a_diff() -> None:
    texts = {MAIN: "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n"}
    plan = fb.make_plan(params(), observed(texts), "h")
    assert [c.action for c in plan.changes] == ["update", "restart", "define", "start", "autostart"]
    diff = plan.changes[0].diff
    for line in ("-auto eth0", "-iface eth0 inet dhcp", "+iface eth0 inet manual", "+auto br0",
                 "+iface br0 inet dhcp", "+\tbridge_ports eth0", "+\tbridge_stp off"):  # fmt: skip
        assert line + "\n" in diff
    assert '<forward mode="bridge"/>' in (plan.changes[2].after or "")


def test_static_address_goes_on_the_bridge_with_the_carried_dns_lines() -> None:
    texts = {MAIN: (CORPUS / "02-static-tabs" / "interfaces").read_text()}
    plan = fb.make_plan(params(address="192.0.2.10/24", gateway="192.0.2.1"), observed(texts), "h")
    after = plan.new_files[MAIN]
    assert after.endswith(
        "iface br0 inet static\n\taddress 192.0.2.10/24\n\tgateway 192.0.2.1\n"
        "\tdns-nameservers 192.0.2.53 198.51.100.53\n\tdns-search example.org\n"
        "\tbridge_ports eth0\n\tbridge_stp off\n"
    )
    assert not any("ask DHCP" in n for n in plan.notes)


def test_a_static_uplink_keeps_its_address_on_the_bridge_by_default() -> None:
    """Converting changes how the host gets its address by nothing: br0 takes over eth0's."""
    texts = {MAIN: (CORPUS / "02-static-tabs" / "interfaces").read_text()}
    plan = fb.make_plan(params(), observed(texts), "h")
    after = plan.new_files[MAIN]
    assert after.endswith(
        "iface eth0 inet manual\n\nauto br0\niface br0 inet static\n\taddress 192.0.2.10\n"
        "\tnetmask 255.255.255.0\n\tgateway 192.0.2.1\n"
        "\tdns-nameservers 192.0.2.53 198.51.100.53\n\tdns-search example.org\n"
        "\tbridge_ports eth0\n\tbridge_stp off\n"
    )
    assert plan.changes[0].summary == "eth0 -> inet manual, br0 over eth0 (static 192.0.2.10/24)"
    (moved,) = [n for n in plan.notes if "takes over" in n]
    assert moved.startswith("br0 takes over eth0's addressing (/etc/network/interfaces:5): ")
    assert moved.endswith("inet static (address 192.0.2.10, netmask 255.255.255.0, gateway "
                          "192.0.2.1, dns-nameservers 192.0.2.53 198.51.100.53, dns-search "
                          "example.org)")  # fmt: skip
    assert not any("DHCP" in n for n in plan.notes), plan.notes


@pytest.mark.parametrize(
    ("uplink", "bridge_head"),
    [
        ("iface eth0 inet dhcp\n\thostname daemon1\n", "iface br0 inet dhcp\n\thostname daemon1\n"),
        ("iface eth0 inet bootp\n\tserver 192.0.2.1\n", "iface br0 inet bootp\n\tserver 192.0.2."),
        ("iface eth0 inet ipv4ll\n", "iface br0 inet ipv4ll\n\tbridge_ports"),
    ],
)  # fmt: skip
def test_the_bridge_takes_over_the_uplinks_method_and_its_options(uplink, bridge_head) -> None:
    texts = {MAIN: "auto eth0\n" + uplink}
    after = fb.make_plan(params(), observed(texts), "h").new_files[MAIN]
    assert bridge_head in after
    assert after.startswith("iface eth0 inet manual\n\n")


def test_a_bridge_configured_otherwise_than_the_uplink_is_refused() -> None:
    texts = {MAIN: "auto eth0\niface eth0 inet static\n\taddress 192.0.2.10/24\n\n"
                   "iface br0 inet dhcp\n\tbridge_ports none\n"}  # fmt: skip
    with pytest.raises(InputError, match=r"both eth0 \(.*:2\) and br0 \(.*:5\) configure an "
                       r"IPv4 address; remove br0's or give address and gateway"):  # fmt: skip
        fb.make_plan(params(), observed(texts), "h")
    # the parameters settle it
    plan = fb.make_plan(params(address="192.0.2.10/24", gateway="192.0.2.1"), observed(texts), "h")
    assert "iface br0 inet static\n" in plan.new_files[MAIN]


def test_an_uplink_of_another_method_is_refused() -> None:
    texts = {MAIN: "auto eth0\niface eth0 inet ppp\n\tprovider campus\n"}
    with pytest.raises(InputError, match=r"eth0 is configured 'inet ppp' \(.*:2\)"):
        fb.make_plan(params(), observed(texts), "h")


def test_existing_bridge_switches_from_dhcp_to_static_touching_only_its_lines() -> None:
    before = "auto br0\niface br0 inet dhcp\n\tbridge_ports eth0\n\tbridge_stp off\n\tbridge_fd 0\n"
    texts = {MAIN: "iface eth0 inet manual\n\n" + before}
    new, _notes = fb.plan_files(
        source_tree.tree_from_texts(MAIN, texts),
        params(address="192.0.2.20/24", gateway="192.0.2.1"),
    )
    assert new[MAIN] == "iface eth0 inet manual\n\nauto br0\niface br0 inet static\n" + (
        "\tbridge_ports eth0\n\tbridge_stp off\n\tbridge_fd 0\n\taddress 192.0.2.20/24\n"
        "\tgateway 192.0.2.1\n"
    )


def test_an_uplink_that_inherits_its_address_is_converted_in_its_own_stanza() -> None:
    """ifupdown 0.8's ``inherits``: eth0's family, method and address come from a template."""
    base = "iface campus inet static\n\taddress 192.0.2.10/24\n\tgateway 192.0.2.1\n\n"
    for head in ("iface eth0 inherits campus", "iface eth0 inet static inherits campus"):
        texts = {MAIN: base + f"auto eth0\n{head}\n\tmtu 9000\n"}
        plan = fb.make_plan(params(), observed(texts), "h")
        after = plan.new_files[MAIN]
        assert after.count("iface eth0 ") == 1, after
        assert "iface eth0 inet manual\n\tmtu 9000\n" in after
        assert not any("None" in note for note in plan.notes), plan.notes


def test_other_names_are_parameters() -> None:
    texts = {MAIN: "auto enp1s0\niface enp1s0 inet dhcp\n"}
    links = {"enp1s0": LinkFacts("enp1s0", "", "")}
    plan = fb.make_plan(
        params(uplink="enp1s0", bridge="vmbr1", network_name="vms"),
        observed(texts, links=links),
        "h",
    )
    assert "iface vmbr1 inet dhcp\n\tbridge_ports enp1s0\n" in plan.new_files[MAIN]
    assert "<name>vms</name>" in (plan.changes[2].after or "")


def test_file_converted_but_kernel_not_yet_plans_only_the_restart() -> None:
    texts = {MAIN: (CORPUS / "04-already-converted" / "interfaces").read_text()}
    plan = fb.make_plan(params(), observed(texts, network=net()), "h")
    assert [c.action for c in plan.changes] == ["restart"]
    assert "not a port of an up br0" in plan.changes[0].summary


def test_a_rollback_deletes_only_a_bridge_the_restored_files_do_not_declare() -> None:
    fresh = observed({MAIN: "auto eth0\niface eth0 inet dhcp\n"})
    assert fb.made_links(params(), fresh) == ("br0",)
    # the file is converted, the kernel not yet: a rollback brings br0 back with the file
    converted = observed({MAIN: (CORPUS / "04-already-converted" / "interfaces").read_text()})
    assert fb.made_links(params(), converted) == ()
    assert fb.made_links(params(), observed({MAIN: "iface eth0 inet dhcp\n"},
                                            links=CONVERTED_LINKS)) == ()  # fmt: skip


# -- kernel facts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("links", "message"),
    [
        ({}, "there is no link eth0"),
        ({"eth0": LinkFacts("eth0", "bridge", "")}, "eth0 is a bridge device, not an uplink"),
        ({"eth0": LinkFacts("eth0", "tun", "")}, "eth0 is a tun device"),
        ({"eth0": LinkFacts("eth0", "loopback", "")}, "eth0 is a loopback device"),
        ({"eth0": LinkFacts("eth0", "", "virbr0")}, "already a port of virbr0"),
        ({**PHYSICAL, "br0": LinkFacts("br0", "veth", "")}, "br0 exists and is a veth"),
        (
            {**PHYSICAL, "br0": LinkFacts("br0", "bridge", ""),
             "eth1": LinkFacts("eth1", "", "br0")},
            "br0 already bridges eth1",
        ),
    ],
)  # fmt: skip
def test_unsuitable_links_are_refused_with_one_line(links, message) -> None:
    texts = {MAIN: "iface eth0 inet dhcp\n"}
    with pytest.raises(InputError, match=message) as info:
        fb.make_plan(params(), observed(texts, links=links), "h")
    assert "\n" not in str(info.value)


def test_guest_taps_on_the_bridge_are_not_a_reason_to_refuse() -> None:
    links = {**CONVERTED_LINKS, "vnet0": LinkFacts("vnet0", "tun", "br0")}
    assert check_links(links, params(), "") is True


# -- libvirt network -------------------------------------------------------------------------


def test_identical_network_is_left_alone() -> None:
    assert fb.plan_network(net(), "forward-bridge", "br0") == []


def test_guests_attached_to_the_network_are_not_a_difference() -> None:
    # libvirt's live XML counts attached guests; a second apply must not restart it.
    live = GOOD_NET_XML.replace("<network>", "<network connections='1'>", 1)
    assert "connections" in live
    assert fb.plan_network(net(live), "forward-bridge", "br0") == []


def test_backups_go_where_no_source_line_reads_them(tmp_path: Path) -> None:
    main = tmp_path / "interfaces"
    (tmp_path / "interfaces.d").mkdir()
    (tmp_path / "interfaces.d" / "50-cloud-init").write_text("auto eth0\niface eth0 inet dhcp\n")
    main.write_text(f"source {tmp_path}/interfaces.d/*\nsource {tmp_path}/*\n")
    kept = fb.default_backup_dir(params(interfaces_file=str(main)))
    for path in (main, tmp_path / "interfaces.d" / "50-cloud-init"):
        file_io.backup(str(path), kept)
    loaded = source_tree.load_tree(str(main))
    assert not [f for f in loaded.files if ".opsbook-backups" in f], loaded.files
    assert len(list(Path(kept).iterdir())) == 2


def test_inactive_network_without_autostart_is_started_and_autostarted() -> None:
    changes = fb.plan_network(net(active=False, autostart=False), "forward-bridge", "br0")
    assert [c.action for c in changes] == ["start", "autostart"]


def test_different_network_is_updated_keeping_its_uuid() -> None:
    old = GOOD_NET_XML.replace("br0", "br9")
    (change,) = fb.plan_network(net(old), "forward-bridge", "br0")
    assert change.action == "update"
    assert "6a8f3c52-0d4e-4b55-9a55-3c1f0e8b9d11" in (change.after or "")
    assert "-  <bridge name='br9'/>" in change.diff or "br9" in change.diff


def test_network_xml_defines_on_the_libvirt_test_driver() -> None:
    with virt.connect("test:///default") as conn:
        virt.define_network(conn, bridge_network("fb-test", "br0"))
        virt.start_network(conn, "fb-test")
        virt.set_network_autostart(conn, "fb-test", True)
        got = virt.get_network(conn, "fb-test")
    assert (got.forward_mode, got.bridge, got.active, got.autostart) == (
        "bridge",
        "br0",
        True,
        True,
    )
    assert fb.plan_network(got, "fb-test", "br0") == []


# -- parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"uplink": "eth 0"}, r"uplink \(ifname\): 'eth 0' is not an interface name"),
        ({"uplink": "-eth0"}, r"uplink \(ifname\): '-eth0' is not an interface name"),
        ({"bridge": "a-very-long-bridge-name"}, "bridge .* is not an interface name"),
        ({"bridge": "eth0"}, "uplink: eth0 is bridge too; give uplink and bridge two different"),
        ({"address": "192.0.2.10"}, "needs a prefix length"),
        ({"address": "192.0.2.300/24"}, "not an IPv4 address with prefix"),
        ({"address": "192.0.2.10/24"}, "address: needs gateway too"),
        ({"address": "192.0.2.10/24", "gateway": "198.51.100.1"}, "not another address in"),
        ({"gateway": "192.0.2.1"}, "gateway: needs address too"),
        ({"interfaces_file": "interfaces"}, "is relative"),
        ({"network_name": "a/b"}, "not a network name"),
    ],
)
def test_bad_parameters_fail_before_anything_with_one_line(kw, message) -> None:
    with pytest.raises(InputError, match=message) as info:
        params(**kw)
    assert "\n" not in str(info.value)


def test_restart_command_runs_in_the_netns_with_quoted_files() -> None:
    argv = restart_argv("ifdown -i {old} x; ifup -i {new} {ifaces}", "ob-host",
                           old="/t/a b", new="/n", ifaces="eth0 br0")  # fmt: skip
    assert argv == ["ip", "netns", "exec", "ob-host", "sh", "-c",
                    "ifdown -i '/t/a b' x; ifup -i /n eth0 br0"]  # fmt: skip
    default = restart_argv(DEFAULT_RESTART, "", old="/o", new="/n", ifaces="eth0 br0")
    assert default[:2] == ["sh", "-c"]
    assert default[2].startswith("ifdown --force -i /o eth0 br0; ")
    assert default[2].endswith("; systemctl restart networking")
    with pytest.raises(InputError, match="placeholders"):
        restart_argv("ifup -i {file}", "", old="o", new="n", ifaces="i")


def test_apply_refuses_without_root_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = {MAIN: "iface eth0 inet dhcp\n"}
    plan = fb.make_plan(params(), observed(texts), "h")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(HostError, match="apply must run as root") as info:
        fb.apply(plan)
    assert "\n" not in str(info.value)


def test_lab_parameter_set_matches_the_notebook() -> None:
    # what the set gives the lab: tests/unit/test_lab_parameters.py
    from opslib.core import params
    from opslib.engine.runner import load_param_file

    root = REPO
    values = load_param_file(root / "parameters" / "lab" / "forward-bridge.yaml")
    info = params.read_runbook(root / "notebooks" / "forward-bridge.ipynb")
    declared = {p.name: p.default for p in info.params}
    assert set(values) <= set(declared)
    assert declared["restart_command"] == DEFAULT_RESTART
    # every name plan() and apply() take is a notebook parameter
    import inspect

    for fn in (fb.plan, fb.apply):
        names = [n for n in inspect.signature(fn).parameters if n != "plan"]
        assert set(names) <= set(declared), set(names) - set(declared)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a throwaway network namespace")
def test_a_file_ifupdown_rejects_is_restored_before_any_restart(tmp_path: Path) -> None:
    """eth0's inet6 static stanza lacks its address: ifupdown reads the file (so does the
    planner), but ``ifup --no-act br0`` rejects it once the stanza has moved to br0."""
    with throwaway_netns("fb", "link add eth0 type veth peer name peer0") as netns:
        main = tmp_path / "interfaces"
        before = "auto eth0\niface eth0 inet dhcp\niface eth0 inet6 static\n\tgateway 2001:db8::1\n"
        main.write_text(before)
        marker = tmp_path / "restarted"
        plan = fb.plan(host="t", libvirt_uri="test:///default", netns=netns,
                       interfaces_file=str(main))  # fmt: skip
        result = fb.apply(plan, restart_command=f"touch {marker}", deadline=5)
        assert result.status == "failed"
        assert "ifup --no-act rejected the new file" in result.summary
        assert main.read_text() == before
        assert not marker.exists()  # networking was never restarted
        assert [s.name for s in result.steps][-2:] == ["validate (ifup --no-act)", "restore backup"]
        assert Path(result.data["backups"][str(main)]).read_text() == before


def test_a_failed_restart_step_is_known_by_the_action_not_by_its_label() -> None:
    """network_restart explains a failure of its own validate step (the old file is back);
    another step that fails, whatever its label, gets the engine's summary."""
    from opslib.core.actions import Action, Applied
    from opslib.core.changes import Result
    from opslib.core.errors import ApplyError
    from opslib.host.ifupdown import network_restart
    from opslib.host.ifupdown.network_restart import Restart, Restarting

    work = Restarting(Restart(), "", "/nonexistent/interfaces", "eth0 br0")
    actions = network_restart.steps(
        work, Result("forward-bridge", "h", "changed"), old_config="", new_files={},
        iface="br0", state=lambda: None, verify=lambda: [],
    )  # fmt: skip
    validate = actions[2]  # back up, write, validate, ...

    def never(_detail: list[str]) -> None:
        raise AssertionError("not run")

    other = Action("validate the libvirt network", never)  # a label like the restart's
    result = Result("forward-bridge", "h", "changed")
    failed = Applied(error=ApplyError("the network is invalid"), failed=other)
    assert not network_restart.failed(work, failed, result, lambda: None)
    assert result.summary == ""

    own = Applied(error=ApplyError("br0: no address"), failed=validate)
    assert network_restart.failed(work, own, result, lambda: None)
    assert result.status == "failed"
    assert result.summary.startswith("ifup --no-act rejected the new file; the old one is back")
