"""The interfaces(5) model: byte-exact round trip, the stanzas ifupdown sees, edits, files."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from opslib import interfaces as ifs
from opslib.errors import InputError

CORPUS = Path(__file__).parent / "interfaces_corpus"
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
                    "post-up", "mapping", "allow-hotplug", "\t", "\r\n", "source "):  # fmt: skip
        assert feature in text, feature


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: str(p.relative_to(CORPUS)))
def test_every_corpus_file_renders_back_byte_for_byte(path: Path) -> None:
    data = path.read_bytes()
    model = ifs.parse(data.decode(), str(path))
    assert model.render().encode() == data


def _ifquery(path: Path, *args: str) -> str:
    state = path.parent / ".ifquery-state"
    done = subprocess.run(
        ["ifquery", "--no-mappings", "-i", str(path), "--state-dir", str(state), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    shutil.rmtree(state, ignore_errors=True)
    return done.stdout


@pytest.mark.skipif(
    shutil.which("ifquery") is None, reason="ifupdown is in scripts/debian-packages.txt"
)
@pytest.mark.parametrize("case", [c for c in CASES if "crlf" not in c])
def test_stanzas_and_options_agree_with_ifquery(case: str, tmp_path: Path) -> None:
    """ifupdown itself is the reference: auto/hotplug lists and each option line."""
    src = tmp_path / case
    shutil.copytree(CORPUS / case, src, ignore=shutil.ignore_patterns("expected", "refuse"))
    # absolute sources would read this machine's /etc: point them into the copy
    main = src / "interfaces"
    main.write_text(main.read_text().replace("/etc/network/interfaces.d/*", "interfaces.d/*"))
    tree = ifs.load_tree(str(main))
    autos, hotplug = [], []
    for _path, _i, s in tree.stanzas():
        if s.kind in ("auto", "allow"):
            cls, names = s.classes
            (autos if cls == "auto" else hotplug if cls == "hotplug" else []).extend(names)
    assert _ifquery(main, "--list").split() == autos
    assert _ifquery(main, "--list", "--allow=hotplug").split() == hotplug
    names = {s.name for _p, _i, s in tree.stanzas() if s.kind == "iface"}
    for name in names:
        reported = _ifquery(main, name).splitlines()
        for key, value in (o for _p, _i, s in tree.stanzas() if s.name == name for o in s.options):
            if key in ("address", "netmask"):
                continue  # ifquery splits CIDR addresses into address + netmask
            key = {"post-up": "up", "pre-down": "down"}.get(key, key)  # ifupdown's aliases
            assert f"{key}: {value}" in reported, (name, key, reported)


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
    edited = ifs.set_option(s, "bridge_stp", "off")
    assert edited.raw == text.replace("bridge-stp on", "bridge-stp off")
    assert ifs.set_option(edited, "bridge_stp", "off") == edited
    appended = ifs.set_option(s, "mtu", "9000")
    assert appended.raw == text + "    mtu 9000\n"


def test_remove_options_and_set_head_leave_other_lines_alone() -> None:
    text = "iface eth0 inet static\n\taddress 192.0.2.5/24\n\t# keep me\n\tmtu 1500\n"
    (s,) = ifs.parse(text).stanzas
    s = ifs.remove_options(
        ifs.set_head(s, ["iface", "eth0", "inet", "manual"]), {"address"}.__contains__
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
    tree = ifs.load_tree(str(tmp_path / "interfaces"))
    rel = [os.path.relpath(p, tmp_path) for p in tree.files]
    assert rel == ["interfaces", "interfaces.d/eth0", "extra/a.cfg", "extra/b.cfg", "nested"]
    assert [(os.path.basename(p), s.method) for p, _i, s in tree.find_ifaces("eth0")] == [
        ("eth0", "dhcp")
    ]
    pure = ifs.tree_from_texts(
        str(tmp_path / "interfaces"), {p: m.render() for p, m in tree.files.items()}
    )
    assert list(pure.files) == list(tree.files)


def test_flatten_inlines_sourced_files_in_place(tmp_path: Path) -> None:
    texts = {
        "/n/interfaces": "auto lo\nsource interfaces.d/*\niface lo inet loopback\n",
        "/n/interfaces.d/eth0": "iface eth0 inet dhcp",
    }
    flat = ifs.flatten(ifs.tree_from_texts("/n/interfaces", texts))
    assert flat.startswith("auto lo\niface eth0 inet dhcp\n# (source interfaces.d/* expanded")
    assert flat.endswith("iface lo inet loopback\n")


def test_missing_file_is_an_input_error_naming_the_parameter(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="interfaces_file"):
        ifs.load_tree(str(tmp_path / "nope"))


def test_write_atomic_replaces_content_and_keeps_mode(tmp_path: Path) -> None:
    target = tmp_path / "interfaces"
    target.write_text("old\n")
    target.chmod(0o600)
    ifs.write_atomic(str(target), "new\n")
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["interfaces"]  # no temp file left


def test_backup_is_timestamped_kept_and_identical(tmp_path: Path) -> None:
    target = tmp_path / "interfaces"
    target.write_text("auto lo\n")
    first = ifs.backup(str(target))
    second = ifs.backup(str(target), str(tmp_path / "backups"))
    assert Path(first).read_text() == "auto lo\n" == Path(second).read_text()
    assert Path(first).name.startswith("interfaces.opsbook-") and first != second
    assert Path(second).parent == tmp_path / "backups"
