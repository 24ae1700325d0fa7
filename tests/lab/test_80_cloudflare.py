"""cloudflare-aaaa in the lab: a nat-bridge guest's SLAAC address published through the stand-in.

Needs the NAT network's IPv6 /64, so the module applies nat-bridge-ipv6 first (idempotent),
and the lab's Cloudflare stand-in (started by `lab up`; started here too if it is not).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opslib.core import slaac
from opslib.lab.cloudflare import service
from opslib.lab.cloudflare.store import Fault
from opslib.lab.config import Lab
from opslib.lab.simulated import parameters as lab_parameters
from opslib.procedures import cloudflare_aaaa as cfa

# a lab of its own, configured as the wiki says, beside the simulated session (test.sh)
pytestmark = [pytest.mark.lab, pytest.mark.lab_session("configured")]
ZONE = service.LAB_ZONES[0]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def published(lab: Lab) -> Iterator[Lab]:
    result = lab_parameters.apply_runbook(lab, "nat-bridge-ipv6")
    assert not result.failed, result.summary
    service.SERVICE.up(lab)  # a no-op when `lab up` started it
    store = service.lab_store(lab)
    for guest in lab.guests[:2]:
        store.delete_records(ZONE, name=f"{guest.name}.{ZONE}")
    yield lab


def publish(lab: Lab, vm: str) -> dict[str, Any]:
    """The lab's cloudflare-aaaa set for guest ``vm``, as plan() takes it."""
    return lab_parameters.arguments(cfa.plan, lab_parameters.publish_set(lab, vm))


def aaaa(lab: Lab, name: str) -> list[tuple[str, bool]]:
    records = service.lab_store(lab).records(ZONE, name=name, type="AAAA")
    return [(r["content"], r["proxied"]) for r in records]


def apply_params(p: dict[str, Any]) -> dict[str, Any]:
    return {k: p[k] for k in ("token", "api_base_url", "replace")}


def test_publish_a_guest_then_nothing_then_follow_its_address(published: Lab) -> None:
    lab = published
    guest = lab.guests[0]
    p = publish(lab, guest.name)
    slaac_address = slaac.eui64_address(lab.routed_prefix, guest.nat_mac)

    plan = cfa.plan(**p)
    assert [c.action for c in plan.changes] == ["create"]
    assert any("answers ping6" in n for n in plan.notes)
    result = cfa.apply(plan, **apply_params(p))
    assert result.status == "changed", result.summary
    assert aaaa(lab, p["record_name"]) == [(slaac_address, True)]

    again = cfa.plan(**p)
    assert again.empty
    assert cfa.apply(again, **apply_params(p)).status == "unchanged"

    # The record no longer matches the guest (as after a new MAC or prefix): the plan
    # shows the update and apply makes it.
    [record] = service.lab_store(lab).records(ZONE, name=p["record_name"])
    service.lab_store(lab).change_record(record["id"], content="2001:db8:2::dead")
    plan = cfa.plan(**p)
    assert [c.action for c in plan.changes] == ["update"]
    assert f"+{p['record_name']}. auto IN AAAA {slaac_address}" in plan.diff
    assert cfa.apply(plan, **apply_params(p)).status == "changed"
    assert aaaa(lab, p["record_name"]) == [(slaac_address, True)]


def test_a_500_on_the_first_create_leaves_one_record_and_a_429_is_waited_out(
    published: Lab,
) -> None:
    lab = published
    guest = lab.guests[1]
    p = publish(lab, guest.name)
    store = service.lab_store(lab)
    store.inject(
        Fault(status=429, retry_after=1, method="GET"),
        Fault(status=500, method="POST", commit=True),
    )
    result = cfa.apply(cfa.plan(**p), **apply_params(p))
    assert result.status == "changed", result.summary
    address = slaac.eui64_address(lab.routed_prefix, guest.nat_mac)
    assert aaaa(lab, p["record_name"]) == [(address, True)]
    assert store.faults() == []


def test_a_headless_run_leaves_no_token_in_its_record(published: Lab, tmp_path: Path) -> None:
    lab = published
    p = publish(lab, lab.guests[0].name)
    notebook = REPO / "notebooks/cloudflare-aaaa.ipynb"
    argv = [sys.executable, "-m", "opslib.cli.main", "run", str(notebook),
            "--records", str(tmp_path / "records"), "-q", "-p", "apply", "true"]  # fmt: skip
    for name in ("libvirt_uri", "netns", "vm", "record_name", "zone", "token", "api_base_url"):
        argv += ["-p", name, str(p[name])]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    token = service.lab_token_file(lab).read_text().strip()
    written = [f for f in (tmp_path / "records").rglob("*") if f.is_file()]
    assert written
    for path in written:
        assert token.encode() not in path.read_bytes(), path
    assert token not in done.stdout + done.stderr
    log = service.lab_dir(lab) / "api.log"
    assert token.encode() not in log.read_bytes()
