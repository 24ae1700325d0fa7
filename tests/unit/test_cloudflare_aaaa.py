"""cloudflare-aaaa: the pure planner, and plan/apply against the stand-in with the real SDK."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opslib.core.changes import Plan
from opslib.core.errors import ApiError, InputError, OpsError, SecretError
from opslib.host.cloudflare.dns import DnsRecord
from opslib.host.libvirt import netxml, virt, virtxml
from opslib.lab.cloudflare.api import CloudflareStandIn
from opslib.lab.cloudflare.store import Fault
from opslib.procedures import cloudflare_aaaa as cfa

TOKEN = "aaaa-test-token-b71d2e9f40"
ADDR = "2001:db8:2:0:5054:ff:fe0b:1"
NEW_ADDR = "2001:db8:2:0:5054:ff:fe0b:99"
WANT = cfa.Desired("example.org", "vm1.example.org", ADDR, True, 1, "vm1")


def rec(content: str, *, type: str = "AAAA", proxied: bool = False, comment: str = "",
        rid: str = "", ttl: int = 1) -> DnsRecord:  # fmt: skip
    return DnsRecord(rid or f"id-{type}-{content}", "vm1.example.org", type, content, proxied,
                     ttl, comment)  # fmt: skip


OURS = WANT.comment

# -- inputs ------------------------------------------------------------------------


def good_inputs(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict(
        record_name="vm1.example.org", zone="example.org", token="file:/etc/cf-token",
        api_base_url="", proxied=True, ttl=1, address="", vm="vm1",
    )  # fmt: skip
    return {**base, **changes}


def test_inputs_are_normalised() -> None:
    given = cfa.Inputs(**good_inputs(record_name="VM1.Example.org."))
    assert (given.record_name, given.zone) == ("vm1.example.org", "example.org")


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"record_name": "vm1.example.net"}, "not in zone example.org"),
        ({"record_name": "bad name.example.org"}, "not a DNS name"),
        ({"proxied": True, "ttl": 300}, "ttl: 300 cannot go with proxied true"),
        ({"proxied": False, "ttl": 5}, "out of range"),
        ({"address": "fe80::1"}, "link-local"),
        ({"address": "fd00::1"}, "unique-local"),
        ({"address": "198.51.100.7"}, "'198.51.100.7' is not an IPv6 address"),
        ({"address": "2001:db8::5%eth0"}, "zone index"),
        ({"address": "::ffff:198.51.100.7"}, "IPv4-mapped"),
        ({"vm": "", "address": ""}, "give vm or address"),
        ({"token": "file:relative/token"}, "absolute path: file:/path"),
        ({"api_base_url": "javascript:alert(1)"}, "is not an https URL"),
        ({"api_base_url": "http://192.0.2.1/client/v4"}, "unencrypted"),
    ],
)
def test_bad_inputs_are_one_line(changes: dict[str, Any], words: str) -> None:
    with pytest.raises(InputError) as err:
        cfa.Inputs(**good_inputs(**changes))
    assert words in str(err.value) and "\n" not in str(err.value)


def test_a_token_given_as_the_value_is_refused_without_echoing_it() -> None:
    with pytest.raises(InputError) as err:
        cfa.Inputs(**good_inputs(token=TOKEN))
    assert "file:/path or env:NAME" in str(err.value) and TOKEN not in str(err.value)


# -- the planner -------------------------------------------------------------------


def actions(existing: list[DnsRecord], **kw: Any) -> list[str]:
    ops, _ = cfa.plan_records(existing, WANT, **kw)
    return [f"{op.action} {(op.before or op.after).content}" for op in ops]  # type: ignore[union-attr]


def test_nothing_there_is_a_create() -> None:
    assert actions([]) == [f"create {ADDR}"]


def test_the_right_record_is_nothing_to_do() -> None:
    assert actions([rec(ADDR, proxied=True, comment=OURS)]) == []
    assert actions([rec("2001:db8:2::5054:ff:fe0b:1", proxied=True)]) == []  # same address


def test_proxied_off_or_other_ttl_is_an_update() -> None:
    assert actions([rec(ADDR, proxied=False, comment=OURS)]) == [f"update {ADDR}"]


def test_our_record_at_an_old_address_is_updated_even_though_proxied() -> None:
    assert actions([rec(NEW_ADDR, proxied=True, comment=OURS)]) == [f"update {NEW_ADDR}"]


def test_an_unproxied_foreign_aaaa_is_taken_over() -> None:
    assert actions([rec(NEW_ADDR)]) == [f"update {NEW_ADDR}"]


def test_a_foreign_proxied_aaaa_elsewhere_refuses_unless_replace() -> None:
    foreign = rec(NEW_ADDR, proxied=True, comment="someone's web server")
    with pytest.raises(InputError, match="replace=True") as err:
        actions([foreign])
    assert "proxied AAAA -> " + NEW_ADDR in str(err.value)
    assert actions([foreign], replace=True) == [f"update {NEW_ADDR}"]


def test_a_cname_refuses_and_replace_deletes_it_before_creating() -> None:
    cname = rec("web.example.net", type="CNAME")
    with pytest.raises(InputError, match=re.escape("CNAME -> web.example.net")):
        actions([cname])
    assert actions([cname], replace=True) == ["delete web.example.net", f"create {ADDR}"]


def test_a_proxied_a_record_refuses() -> None:
    with pytest.raises(InputError, match=re.escape("proxied A -> 192.0.2.80")):
        actions([rec("192.0.2.80", type="A", proxied=True)])


def test_an_unproxied_a_record_is_only_noted() -> None:
    ops, notes = cfa.plan_records([rec("192.0.2.80", type="A")], WANT)
    assert [op.action for op in ops] == ["create"]
    assert "IPv4 clients reach that address" in notes[0]


def test_our_duplicates_are_removed() -> None:
    twins = [rec(ADDR, proxied=True, comment=OURS, rid="a"), rec(ADDR, proxied=True, rid="b")]
    assert actions(twins) == [f"delete {ADDR}"]


def test_a_plan_carries_before_and_after_text_and_a_diff() -> None:
    plan = cfa.records_plan(
        host="lab", want=WANT, existing=[rec(NEW_ADDR, proxied=True, comment=OURS)], replace=False
    )
    [change] = plan.changes
    assert change.action == "update" and change.target == "dns:example.org/vm1.example.org"
    assert f"-vm1.example.org. auto IN AAAA {NEW_ADDR}" in change.diff
    assert f"+vm1.example.org. auto IN AAAA {ADDR}" in change.diff
    assert json.dumps(plan.to_json())  # a record can hold it


def test_verify_wants_exactly_one_matching_aaaa() -> None:
    assert [c.status for c in cfa.verify([rec(ADDR, proxied=True)], WANT)] == ["ok"]
    assert cfa.verify([rec(ADDR, proxied=False)], WANT)[0].status == "fail"
    two = [rec(ADDR, proxied=True), rec(NEW_ADDR, proxied=True)]
    assert cfa.verify(two, WANT)[0].status == "fail"


# -- the VM's address from libvirt XML (pure) ----------------------------------------

DOMAIN_XML = """<domain type='qemu'><name>vm1</name><devices>
  <interface type='network'><mac address='52:54:00:0b:00:01'/>
    <source network='default'/></interface>
  <interface type='bridge'><mac address='52:54:00:0b:01:03'/><source bridge='br0'/></interface>
</devices></domain>"""
NAT_XML = """<network><name>default</name><forward mode='nat'/><bridge name='virbr0'/>
  <ip address='198.51.100.1' netmask='255.255.255.0'/>
  <ip family='ipv6' address='2001:db8:2::1' prefix='64'/></network>"""


def test_slaac_address_comes_from_the_nat_nic_and_the_networks_prefix() -> None:
    domain = virt.Domain("vm1", "u", "running", virtxml.parse_interfaces(DOMAIN_XML))
    [found] = cfa.slaac_candidates(domain, [netxml.parse_network(NAT_XML)])
    assert found.address == ADDR
    assert "52:54:00:0b:00:01" in found.source and "2001:db8:2::/64" in found.source


def test_a_nat_network_without_ipv6_gives_no_candidate() -> None:
    domain = virt.Domain("vm1", "u", "running", virtxml.parse_interfaces(DOMAIN_XML))
    v4_only = NAT_XML.replace("<ip family='ipv6' address='2001:db8:2::1' prefix='64'/>", "")
    assert cfa.slaac_candidates(domain, [netxml.parse_network(v4_only)]) == []


# -- plan and apply through the SDK against the stand-in -----------------------------


@pytest.fixture
def cf() -> Iterator[CloudflareStandIn]:
    with CloudflareStandIn(token=TOKEN, read_token="aaaa-read-token-61c0d3") as server:
        yield server


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "cf-token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


def params(cf: CloudflareStandIn, token_file: Path, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict(
        host="lab", libvirt_uri="test:///default", netns="", vm="vm1",
        record_name="vm1.example.org", zone="example.org", token=f"file:{token_file}",
        api_base_url=cf.url, proxied=True, ttl=1, address=ADDR, replace=False,
    )  # fmt: skip
    return {**base, **changes}


def run(cf: CloudflareStandIn, token_file: Path, **changes: Any) -> tuple[Plan, Any]:
    p = params(cf, token_file, **changes)
    plan = cfa.plan(**p)
    result = cfa.apply(plan, token=p["token"], api_base_url=p["api_base_url"], replace=p["replace"])
    return plan, result


def aaaa(cf: CloudflareStandIn) -> list[tuple[str, bool, int]]:
    return [
        (r["content"], r["proxied"], r["ttl"])
        for r in cf.store.records("example.org", name="vm1.example.org", type="AAAA")
    ]


def test_publish_then_second_apply_is_unchanged_then_address_change_updates(
    cf: CloudflareStandIn, token_file: Path
) -> None:
    plan, result = run(cf, token_file)
    assert [c.action for c in plan.changes] == ["create"]
    assert result.status == "changed" and not result.failed
    assert aaaa(cf) == [(ADDR, True, 1)]

    plan, result = run(cf, token_file)
    assert plan.empty and result.status == "unchanged"
    assert aaaa(cf) == [(ADDR, True, 1)]

    plan, result = run(cf, token_file, address=NEW_ADDR)
    assert [c.action for c in plan.changes] == ["update"]
    assert f"+vm1.example.org. auto IN AAAA {NEW_ADDR}" in plan.diff
    assert result.status == "changed"
    assert aaaa(cf) == [(NEW_ADDR, True, 1)]


def test_a_500_on_the_first_create_still_leaves_one_record(
    cf: CloudflareStandIn, token_file: Path
) -> None:
    cf.store.inject(Fault(status=500, method="POST", commit=True))
    _, result = run(cf, token_file)
    assert result.status == "changed" and not result.failed
    assert aaaa(cf) == [(ADDR, True, 1)]


def test_a_429_is_waited_out(cf: CloudflareStandIn, token_file: Path) -> None:
    cf.store.inject(Fault(status=429, retry_after=1, method="POST"))
    _, result = run(cf, token_file)
    assert result.status == "changed"
    assert aaaa(cf) == [(ADDR, True, 1)]
    assert [s for m, _, s in cf.requests if m == "POST"] == [429, 200]


def test_a_failed_create_after_replacing_a_cname_puts_the_cname_back(
    cf: CloudflareStandIn, token_file: Path
) -> None:
    cf.store.put_record(
        "example.org", name="vm1.example.org", type="CNAME", content="w.example.net"
    )
    p = params(cf, token_file, replace=True)
    plan = cfa.plan(**p)
    cf.store.inject(Fault(status=500, count=4, method="POST"))  # every try of the create
    result = cfa.apply(plan, token=p["token"], api_base_url=cf.url, replace=True)
    assert result.status == "rolled back" and result.failed
    # the CNAME's delete was undone: reported apart, not as a change made
    assert result.changes == [] and [c["action"] for c in result.data["undone"]] == ["delete"]
    [back] = cf.store.records("example.org", name="vm1.example.org")
    assert (back["type"], back["content"]) == ("CNAME", "w.example.net")


def test_a_cname_refuses_the_plan_in_one_line(cf: CloudflareStandIn, token_file: Path) -> None:
    cf.store.put_record(
        "example.org", name="vm1.example.org", type="CNAME", content="w.example.net"
    )
    with pytest.raises(InputError, match="set replace=True"):
        cfa.plan(**params(cf, token_file))


def test_a_read_only_token_fails_with_the_permission_named(
    cf: CloudflareStandIn, tmp_path: Path
) -> None:
    ro = tmp_path / "ro"
    ro.write_text("aaaa-read-token-61c0d3")
    ro.chmod(0o600)
    p = params(cf, ro)
    plan = cfa.plan(**p)  # reading is allowed
    result = cfa.apply(plan, token=p["token"], api_base_url=cf.url)
    assert result.status == "failed" and result.failed
    assert "lacks permission" in result.summary and "Zone > DNS > Edit" in result.summary
    assert aaaa(cf) == []


def test_a_wrong_token_fails_the_plan_with_the_permission_named(
    cf: CloudflareStandIn, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("wrong-token-3f9a0c2b")
    wrong.chmod(0o600)
    with pytest.raises(ApiError) as err:
        cfa.plan(**params(cf, wrong))
    assert err.value.status == 400 and "Zone > DNS > Edit" in str(err.value)


def test_an_address_with_a_zone_index_is_refused_before_any_request(
    cf: CloudflareStandIn, token_file: Path
) -> None:
    # The API types AAAA content as a plain IPv6 address: it would refuse this at apply.
    with pytest.raises(InputError) as err:
        cfa.plan(**params(cf, token_file, address="2001:db8::5%eth0"))
    assert str(err.value) == (
        "parameter address (ipv6-global?): '2001:db8::5%eth0' has a zone index (%eth0), "
        "which no record, route or tunnel end can hold; write 2001:db8::5"
    )
    assert cf.requests == []


def test_missing_token_file_is_one_line(cf: CloudflareStandIn, tmp_path: Path) -> None:
    with pytest.raises(SecretError) as err:
        cfa.plan(**params(cf, tmp_path / "nope"))
    assert "no such file" in str(err.value) and "\n" not in str(err.value)


def test_unreadable_token_file_is_one_line(cf: CloudflareStandIn, token_file: Path) -> None:
    if os.geteuid() != 0:
        token_file.chmod(0)
        with pytest.raises(SecretError, match="not readable"):
            cfa.plan(**params(cf, token_file))
        return
    # Root reads every file: read it in a child that has dropped to an unprivileged user.
    shared = Path(tempfile.mkdtemp(prefix="opsbook-token-"))
    try:
        shared.chmod(0o755)
        path = shared / "token"
        path.write_text(token_file.read_text())
        outcomes = {}
        for mode in (0o644, 0o600):
            path.chmod(mode)
            outcomes[mode] = _load_as_nobody(f"file:{path}")
        assert outcomes[0o644] == "read"
        assert outcomes[0o600] == f"secret source file:{path}: not readable by this user"
    finally:
        shutil.rmtree(shared)


def _load_as_nobody(source: str) -> str:
    """secrets.load in a forked child running as nobody: its outcome, never the value."""
    from opslib.core import secrets

    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery from here on
        os.close(rfd)
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            secrets.load(source, warn=False)
            message = "read"
        except SecretError as exc:
            message = str(exc)
        except BaseException as exc:
            message = f"unexpected {type(exc).__name__}"
        os.write(wfd, message.encode())
        os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd) as pipe:
        message = pipe.read()
    os.waitpid(pid, 0)
    return message


def test_world_readable_token_file_is_a_warning_in_the_result(
    cf: CloudflareStandIn, token_file: Path
) -> None:
    token_file.chmod(0o644)
    plan, result = run(cf, token_file)
    assert any("world-readable" in n for n in plan.notes)
    [warning] = [c for c in result.checks if c.name == "token file"]
    assert warning.status == "warn" and "chmod o-r" in warning.seen
    assert result.status == "changed"


def test_drift_check_for_host_health(cf: CloudflareStandIn, token_file: Path) -> None:
    p = params(cf, token_file)
    del p["replace"]
    [missing] = cfa.checks(**p)
    assert missing.status == "fail" and "drift: would create" in missing.seen
    run(cf, token_file)
    assert [c.status for c in cfa.checks(**p)] == ["ok"]
    [record] = cf.store.records("example.org", name="vm1.example.org")
    cf.store.change_record(record["id"], content=NEW_ADDR)  # someone edits it by hand
    [drift] = cfa.checks(**p)
    assert drift.status == "fail" and "update" in drift.seen


def test_the_token_is_in_no_plan_result_log_or_error(
    cf: CloudflareStandIn, token_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cf.store.inject(Fault(status=500, method="POST", commit=True), Fault(status=429))
    plan, result = run(cf, token_file)
    texts = [json.dumps(plan.to_json()), json.dumps(plan.data), json.dumps(result.to_json())]
    texts.append(repr(plan) + repr(result))
    cf.store.inject(Fault(status=503, count=20))
    with pytest.raises(OpsError) as err:
        cfa.plan(**params(cf, token_file))
    texts.append("".join(traceback.format_exception(err.value)))
    assert caplog.text
    for text in [*texts, caplog.text]:
        assert TOKEN not in text


def test_drift_check_fails_instead_of_raising_when_the_api_refuses(
    cf: CloudflareStandIn, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("wrong-token-3f9a0c2b")
    p = params(cf, wrong)
    del p["replace"]
    [check] = cfa.checks(**p)
    assert check.status == "fail" and "Zone > DNS > Edit" in check.seen
