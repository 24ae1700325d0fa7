"""The interfaces(5) model: byte-exact round trip, the stanzas ifupdown sees, edits, files."""

from __future__ import annotations

import functools
import gzip
import ipaddress
import os
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from support import INTERFACES_CORPUS

from opslib.core.errors import InputError
from opslib.host.ifupdown import edits, file_io, source_tree
from opslib.host.ifupdown import interfaces as ifs

CORPUS = INTERFACES_CORPUS
MAIN = "/etc/network/interfaces"
CASES = sorted(p.name for p in CORPUS.iterdir() if p.is_dir())
INPUTS = sorted(
    p
    for p in CORPUS.rglob("*")
    if p.is_file() and "expected" not in p.relative_to(CORPUS).parts and p.name != "refuse"
)


def test_corpus_is_big_and_varied() -> None:
    assert len(CASES) >= 15
    text = "".join(p.read_bytes().decode() for p in INPUTS)
    for feature in ("\\\n", "source-directory", "bond-slaves", "vlan-raw-device", "inet6",
                    "post-up", "mapping", "allow-hotplug", "\t", "\r\n", "source ", " inherits ",
                    "allow-boot", "hwaddress", "v4tunnel", "6to4", "inet6 tunnel"):  # fmt: skip
        assert feature in text, feature


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: str(p.relative_to(CORPUS)))
def test_every_corpus_file_renders_back_byte_for_byte(path: Path) -> None:
    data = path.read_bytes()
    refuse = next((p / "refuse" for p in path.parents if (p / "refuse").exists()), None)
    try:
        model = ifs.parse(data.decode(), str(path))
    except InputError as exc:  # a line ifupdown refuses: one line naming the file and line
        assert refuse is not None and re.search(refuse.read_text().strip(), str(exc)), exc
        assert str(exc).startswith(f"{path}:") and "\n" not in str(exc)
        return
    assert model.render().encode() == data


def _ifquery(main: Path, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """ifquery on ``main``; --no-mappings: a mapping stanza would run its script."""
    done = subprocess.run(
        ["ifquery", "--no-mappings", "-i", str(main), "--state-dir", str(state), *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert not any(state.iterdir()), "ifquery wrote to its state directory"
    return done


def _reported(stdout: str) -> list[tuple[str, str]]:
    """ifquery's "key: value" lines; a line without a key continues the value above it."""
    found: list[tuple[str, str]] = []
    for line in stdout.splitlines():
        m = re.match(r"^([^\s:]+): ?(.*)$", line)
        if m:
            found.append((m[1], m[2]))
        else:
            found[-1] = (found[-1][0], found[-1][1] + "\n" + line)
    return found


# ifquery's normalisations of what a stanza says; the comparison allows these and no others:
# 1. post-up is printed as up, pre-down as down (aliases, interfaces(5));
# 2. a template's options come first, then the stanza's own (``inherits``, interfaces(5));
# 3. a repeated option other than the hooks is one value, its lines joined by a newline
#    (ifupdown's config.c), printed where it first appeared;
# 4. the static methods split ``address A/N`` into address A and, after all options, netmask
#    N (dotted for inet), and hwaddress drops a leading "ether" (inet.defn conversions);
# 5. after the options come keys the method adds: its defaults (what ifquery prints for a
#    bare stanza of that method) and values derived from options (broadcast, hexaddress);
# 6. every stanza of the name, one after the other, in reading order.
HOOK_NAMES = {"pre-up", "up", "down", "post-down"}
DERIVED = {"broadcast", "hexaddress"}


@functools.cache
def _method_defaults(family: str, method: str) -> frozenset[str]:
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "interfaces"
        probe.write_text(f"iface probe {family} {method}\n")
        (Path(tmp) / "state").mkdir()
        done = _ifquery(probe, Path(tmp) / "state", "probe")
    assert done.returncode == 0, done.stderr
    return frozenset(k for k, _v in _reported(done.stdout))


def _expected(iface: source_tree.Iface) -> tuple[list[tuple[str, str]], dict[str, str | None]]:
    """What ifquery prints for one resolved stanza: options in order, then the keys it may
    add (with the value to expect, None where the method computes it)."""
    options: list[list[str]] = []
    for key, value in iface.options:
        key = {"post-up": "up", "pre-down": "down"}.get(key, key)
        same = next((o for o in options if o[0] == key), None)
        if same is not None and key not in HOOK_NAMES:
            same[1] += "\n" + value
        else:
            options.append([key, value])
    added: dict[str, str | None] = dict.fromkeys(
        _method_defaults(iface.family, iface.method) | DERIVED
    )
    for option in options:
        if option[0] == "hwaddress":
            option[1] = option[1].removeprefix("ether").strip()
        if option[0] == "address" and iface.method == "static" and "/" in option[1]:
            net = ipaddress.ip_interface(option[1])
            option[1] = str(net.ip)
            v4 = isinstance(net, ipaddress.IPv4Interface)
            added["netmask"] = str(net.netmask) if v4 else str(net.network.prefixlen)
    return [(k, v) for k, v in options], added


def _check_against(reported: list[tuple[str, str]], ifaces: list[source_tree.Iface]) -> None:
    at = 0
    blocks = [_expected(f) for f in ifaces]
    for n, (options, added) in enumerate(blocks):
        got = reported[at : at + len(options)]
        assert got == options, (ifaces[n].name, ifaces[n].family, got, options)
        at += len(options)
        after = blocks[n + 1][0][:1] if n + 1 < len(blocks) else []
        while at < len(reported) and reported[at][0] in added and reported[at : at + 1] != after:
            key, value = reported[at]
            assert added[key] in (None, value), (ifaces[n].name, key, value, added[key])
            at += 1
    assert at == len(reported), ("ifquery printed more", reported[at:])


@pytest.mark.skipif(
    shutil.which("ifquery") is None, reason="ifupdown is in scripts/debian-packages.txt"
)
@pytest.mark.parametrize("case", CASES)
def test_the_model_reads_every_corpus_file_as_ifquery_does(case: str, tmp_path: Path) -> None:
    """ifupdown itself is the reference: each class's members, and each interface's
    options as ifquery prints them (with only the normalisations listed above); a file
    it refuses, the model refuses at the same file and line."""
    src = tmp_path / case
    shutil.copytree(CORPUS / case, src, ignore=shutil.ignore_patterns("expected", "refuse"))
    state = tmp_path / "state"
    state.mkdir()
    # absolute sources would read this machine's /etc: point them into the copy
    main = src / "interfaces"
    main.write_bytes(main.read_bytes().replace(b"/etc/network/interfaces.d/*", b"interfaces.d/*"))
    try:
        tree = source_tree.load_tree(str(main))
    except InputError as exc:
        where = str(exc).split(": ", 1)[0]
        assert where.startswith(str(src)), str(exc)
        assert f"ifquery: {where}: " in _ifquery(main, state, "--list").stderr
        assert (CORPUS / case / "refuse").exists(), f"the model refuses {case}: {exc}"
        return
    classes = tree.classes()
    # ifupdown puts lo first in auto by itself, whether the file names it or not
    auto = ["lo", *(n for n in classes.pop("auto", []) if n != "lo")]
    assert _ifquery(main, state, "--list").stdout.split() == auto
    for cls, names in classes.items():
        assert _ifquery(main, state, "--list", f"--allow={cls}").stdout.split() == names, cls
    for name in sorted({f.name for f in tree.ifaces()}):
        done = _ifquery(main, state, name)
        assert done.returncode == 0, done.stderr
        _check_against(_reported(done.stdout), tree.ifaces(name))


MANPAGE = Path("/usr/share/man/man5/interfaces.5.gz")
# A value for each option interfaces(5) marks required, so that every stanza below is one
# ifup --no-act would bring up (ifquery itself reads a stanza without them).
REQUIRED_SAMPLES = {
    ("inet", "address"): "192.0.2.10/24",
    ("inet", "mode"): "gre",
    ("inet", "endpoint"): "203.0.113.1",
    ("inet6", "address"): "2001:db8:1::2/64",
    ("inet6", "mode"): "ip6ip6",
    ("inet6", "endpoint"): "2001:db8:2::1",
    ("inet6", "local"): "192.0.2.10",
    ("can", "bitrate"): "125000",
}


def _documented_methods() -> dict[str, dict[str, list[str]]]:
    """interfaces(5)'s families -> methods -> the options it marks required (read from the
    man page's "FAMILY ADDRESS FAMILY" sections and their "The METHOD Method" subsections)."""
    found: dict[str, dict[str, list[str]]] = {}
    family = method = option = ""
    for line in gzip.decompress(MANPAGE.read_bytes()).decode().splitlines():
        if m := re.match(r"\.SH (\S+) ADDRESS FAMILY", line):
            family, method = m[1].lower(), ""
            found[family] = {}
        elif line.startswith(".SH"):
            family = ""
        elif family and (m := re.match(r"\.SS The (\S+) Method", line)):
            method = m[1]
            found[family][method] = []
        elif method and (m := re.match(r"\.BI (\S+)", line)):
            option = m[1]
        elif method and "required" in line:
            found[family][method].append(option)
    return found


def _method_stanza(family: str, method: str, required: list[str]) -> str:
    options = "".join(f"\t{o} {REQUIRED_SAMPLES[family, o]}\n" for o in required)
    return f"# {family} {method}\nauto x\niface x {family} {method}\n{options}\tpre-up true\n"


@pytest.mark.skipif(
    shutil.which("ifquery") is None or not MANPAGE.exists(), reason="needs ifupdown"
)
def test_every_documented_method_is_read_exactly_when_ifquery_reads_it(tmp_path: Path) -> None:
    """interfaces(5) names the methods; ifquery decides what ifupdown reads. For a stanza of
    every method of every family (and methods of no family), the model reads it exactly when
    ifquery does, renders it back byte for byte and sees the options ifquery prints."""
    documented = _documented_methods()
    assert {"inet", "inet6", "ipx"} <= set(documented)
    assert "tunnel" in documented["inet6"]  # testcase.19 of Debian's ifupdown
    state = tmp_path / "state"
    state.mkdir()
    main = tmp_path / "interfaces"
    every = {m for methods in documented.values() for m in methods} | {"bogus"}
    for family in {*documented, *ifs.METHODS, "bogus"}:
        for method in sorted(every | set(ifs.METHODS.get(family, ()))):
            required = documented.get(family, {}).get(method, [])
            text = _method_stanza(family, method, required)
            main.write_text(text)
            done = _ifquery(main, state, "x")
            try:
                tree = source_tree.load_tree(str(main))
            except InputError as exc:
                assert done.returncode != 0, (family, method, str(exc))
                assert f"ifquery: {main}:3: " in done.stderr
                assert str(exc).startswith(f"{main}:3: ") and "\n" not in str(exc)
                continue
            assert done.returncode == 0, (family, method, done.stderr)
            assert tree.files[str(main)].render() == text
            (iface,) = tree.ifaces("x")
            assert (iface.family, iface.method) == (family, method)
            _check_against(_reported(done.stdout), [iface])
    for family, methods in documented.items():
        assert set(methods) <= ifs.METHODS[family], family


@pytest.mark.skipif(shutil.which("ifup") is None, reason="needs ifupdown")
def test_an_inet6_tunnel_stanza_is_one_ifup_brings_up(tmp_path: Path) -> None:
    text = _method_stanza("inet6", "tunnel", ["mode", "endpoint", "address"])
    (tmp_path / "interfaces").write_text(text)
    done = subprocess.run(
        ["ifup", "--no-act", "-i", str(tmp_path / "interfaces"), "--state-dir",
         str(tmp_path / "state"), "x"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (stanza,) = ifs.parse(text).ifaces("x")[0][1:]
    assert (stanza.family, stanza.method, stanza.option("mode")) == ("inet6", "tunnel", "ip6ip6")


def test_a_method_of_another_family_is_refused_naming_the_familys_methods() -> None:
    with pytest.raises(InputError, match=r"^/x:1: unknown or no method.* inet6 methods"):
        ifs.parse("iface x inet6 bootp\n", "/x")


def test_inherits_is_ifupdowns_keyword_not_an_address_family() -> None:
    text = (
        "iface base inet static\n\taddress 192.0.2.10/24\n\tmtu 9000\n"
        "iface eth1 inherits base\n"
        "iface eth0 inet dhcp inherits base\n\tmtu 1500\n"
    )
    _base, eth1, eth0 = ifs.parse(text, MAIN).stanzas
    assert (eth1.name, eth1.family, eth1.method, eth1.inherits) == ("eth1", "", "", "base")
    assert (eth0.name, eth0.family, eth0.method, eth0.inherits) == ("eth0", "inet", "dhcp", "base")
    tree = source_tree.tree_from_texts(MAIN, {MAIN: text})
    (one,) = tree.ifaces("eth1")
    assert (one.family, one.method, one.option("address")) == ("inet", "static", "192.0.2.10/24")
    (zero,) = tree.ifaces("eth0")
    assert zero.options == [("address", "192.0.2.10/24"), ("mtu", "9000"), ("mtu", "1500")]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("iface", "too few parameters for iface line"),
        ("iface eth0", "unknown or no address type"),
        ("iface eth0 inet", "unknown or no method"),
        ("iface eth0 inet6 dhcp inherits", "'inherits' keyword is missing a parameter"),
        ("iface eth0 inet static inherits nothere", "unknown iface to inherit from: nothere"),
    ],
)
def test_a_malformed_iface_line_is_one_input_error_naming_file_and_line(line, message) -> None:
    texts = {MAIN: f"auto lo\niface lo inet loopback\n{line}\n\taddress 192.0.2.10/24\n"}
    with pytest.raises(InputError, match=f"^{MAIN}:3: {message}") as info:
        source_tree.tree_from_texts(MAIN, texts)
    assert "\n" not in str(info.value)


def test_a_line_continues_only_when_the_backslash_is_its_last_character() -> None:
    # "\\ " and "\\\r" end no continuation for ifupdown: the next line is an option of its own
    for tail in (" \n", "\r\n"):
        with pytest.raises(InputError, match=r"^/x:3: option with empty value \('two'\)"):
            ifs.parse(f"iface eth0 inet manual\n\tup echo one \\{tail}\ttwo\n", "/x")
    (stanza,) = ifs.parse("iface eth0 inet manual\n\tup echo one \\\ntwo\n").stanzas
    assert stanza.options == [("up", "echo one two")]


def test_a_tab_separates_an_option_from_its_value() -> None:
    (stanza,) = ifs.parse("iface eth0 inet manual\n\tmtu\t9000\n").stanzas
    assert stanza.options == [("mtu", "9000")]


def test_continuation_lines_join_like_ifupdown_and_comments_do_not_continue() -> None:
    text = "iface eth0 inet dhcp\n\tup echo a \\\n\tb\n#  note \\\n\tpost-up true\n"
    (stanza,) = ifs.parse(text).stanzas
    assert stanza.options == [("up", "echo a \tb"), ("post-up", "true")]
    assert len(stanza.lines) == 4  # header, joined "up", comment, post-up


def test_comments_between_options_stay_inside_and_trailing_ones_go_to_what_follows() -> None:
    text = (
        "iface eth0 inet static\n\taddress 192.0.2.5/24\n\t# why\n\n"
        "\tgateway 192.0.2.1\n# next\n\nauto eth0\n"
    )
    kinds = [s.kind for s in ifs.parse(text).stanzas]
    assert kinds == ["iface", "comment", "blank", "auto"]
    assert ifs.parse(text).stanzas[0].option("gateway") == "192.0.2.1"


def test_line_numbers_count_physical_lines() -> None:
    model = ifs.parse("auto lo\niface lo inet loopback\n\tup a \\\n\t b\n\nauto eth0\n")
    assert [(s.kind, s.lineno) for s in model.stanzas] == [
        ("auto", 1), ("iface", 2), ("blank", 5), ("auto", 6),
    ]  # fmt: skip


def test_set_option_keeps_the_files_spelling_and_touches_one_line() -> None:
    text = "iface vmbr0 inet dhcp\n    bridge-ports eth0\n    bridge-stp on\n    bridge-fd 0\n"
    (s,) = ifs.parse(text).stanzas
    edited = edits.set_option(s, "bridge_stp", "off")
    assert edited.raw == text.replace("bridge-stp on", "bridge-stp off")
    assert edits.set_option(edited, "bridge_stp", "off") == edited
    appended = edits.set_option(s, "mtu", "9000")
    assert appended.raw == text + "    mtu 9000\n"


def test_remove_options_and_set_head_leave_other_lines_alone() -> None:
    text = "iface eth0 inet static\n\taddress 192.0.2.5/24\n\t# keep me\n\tmtu 1500\n"
    (s,) = ifs.parse(text).stanzas
    s = edits.remove_options(
        edits.set_head(s, ["iface", "eth0", "inet", "manual"]), {"address"}.__contains__
    )
    assert s.raw == "iface eth0 inet manual\n\t# keep me\n\tmtu 1500\n"


def test_source_and_source_directory_are_followed_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "interfaces.d").mkdir()
    (tmp_path / "extra").mkdir()
    (tmp_path / "interfaces").write_text("source-directory interfaces.d\nsource extra/*.cfg\n")
    (tmp_path / "interfaces.d" / "eth0").write_text("iface eth0 inet dhcp\n")
    (tmp_path / "interfaces.d" / "eth0.dpkg-old").write_text("iface eth0 inet static\n")
    (tmp_path / "extra" / "b.cfg").write_text("source ../nested\n")
    (tmp_path / "extra" / "a.cfg").write_text("iface br9 inet manual\n")
    (tmp_path / "nested").write_text("iface eth7 inet manual\n")
    tree = source_tree.load_tree(str(tmp_path / "interfaces"))
    rel = [os.path.relpath(p, tmp_path) for p in tree.files]
    assert rel == ["interfaces", "interfaces.d/eth0", "extra/a.cfg", "extra/b.cfg", "nested"]
    assert [(os.path.basename(p), s.method) for p, _i, s in tree.find_ifaces("eth0")] == [
        ("eth0", "dhcp")
    ]
    pure = source_tree.tree_from_texts(
        str(tmp_path / "interfaces"), {p: m.render() for p, m in tree.files.items()}
    )
    assert list(pure.files) == list(tree.files)


def test_flatten_inlines_sourced_files_in_place(tmp_path: Path) -> None:
    texts = {
        "/n/interfaces": "auto lo\nsource interfaces.d/*\niface lo inet loopback\n",
        "/n/interfaces.d/eth0": "iface eth0 inet dhcp",
    }
    flat = source_tree.flatten(source_tree.tree_from_texts("/n/interfaces", texts))
    assert flat.startswith("auto lo\niface eth0 inet dhcp\n# (source interfaces.d/* expanded")
    assert flat.endswith("iface lo inet loopback\n")


def test_missing_file_is_an_input_error_naming_the_parameter(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="interfaces_file"):
        source_tree.load_tree(str(tmp_path / "nope"))


def test_write_atomic_replaces_content_and_keeps_mode(tmp_path: Path) -> None:
    target = tmp_path / "interfaces"
    target.write_text("old\n")
    target.chmod(0o600)
    file_io.write_atomic(str(target), "new\n")
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["interfaces"]  # no temp file left


def test_backup_is_timestamped_kept_and_identical(tmp_path: Path) -> None:
    target = tmp_path / "interfaces"
    target.write_text("auto lo\n")
    first = file_io.backup(str(target))
    second = file_io.backup(str(target), str(tmp_path / "backups"))
    assert Path(first).read_text() == "auto lo\n" == Path(second).read_text()
    assert Path(first).name.startswith("interfaces.opsbook-") and first != second
    assert Path(second).parent == tmp_path / "backups"
