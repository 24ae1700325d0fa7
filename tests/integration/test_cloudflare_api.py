"""The Cloudflare v4 stand-in: wire format over HTTP, and the real SDK talking to it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudflare
import pytest

from opslib.core import procs
from opslib.lab.cloudflare.api import CloudflareStandIn
from opslib.lab.cloudflare.store import Fault, Store

TOKEN = "edit-token-0123456789abcdef"
READ_TOKEN = "read-token-0123456789abcdef"


@pytest.fixture
def cf() -> Iterator[CloudflareStandIn]:
    with CloudflareStandIn(token=TOKEN, read_token=READ_TOKEN, zones=("example.org",)) as server:
        yield server


def sdk(url: str, token: str = TOKEN) -> cloudflare.Cloudflare:
    return cloudflare.Cloudflare(api_token=token, base_url=url, max_retries=0)


def http(
    method: str, url: str, *, token: str | None = TOKEN, body: Any = None
) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    if data:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def zone_id(cf: CloudflareStandIn) -> str:
    return cf.store.zone_id("example.org")


def test_zone_lookup_by_name_returns_the_v4_envelope(cf: CloudflareStandIn) -> None:
    status, _, body = http("GET", f"{cf.url}/zones?name=example.org")
    assert status == 200
    assert set(body) == {"success", "errors", "messages", "result", "result_info"}
    assert body["success"] is True and body["errors"] == []
    assert [z["name"] for z in body["result"]] == ["example.org"]
    assert body["result_info"]["total_count"] == 1
    assert http("GET", f"{cf.url}/zones?name=example.net")[2]["result"] == []


def test_sdk_creates_lists_edits_and_deletes_a_record(cf: CloudflareStandIn) -> None:
    client = sdk(cf.url)
    zid = next(iter(client.zones.list(name="example.org"))).id
    made = client.dns.records.create(
        zone_id=zid, name="vm1.example.org", type="AAAA", content="2001:db8:2:0::5", ttl=300
    )
    assert made is not None and made.content == "2001:db8:2::5"  # canonical form
    listed = list(client.dns.records.list(zone_id=zid, name={"exact": "vm1.example.org"}))
    assert [r.id for r in listed] == [made.id]
    edited = client.dns.records.edit(
        made.id, zone_id=zid, name="vm1.example.org", type="AAAA", ttl=300, proxied=True
    )
    assert edited is not None and edited.proxied is True
    assert edited.ttl == 1  # proxied records get automatic TTL, as on the real API
    assert edited.content == "2001:db8:2::5"  # PATCH keeps what it does not send
    put = client.dns.records.update(
        made.id, zone_id=zid, name="vm1.example.org", type="AAAA", ttl=120, content="2001:db8::9"
    )
    assert put is not None and (put.proxied, put.ttl) == (False, 120)  # PUT replaces
    client.dns.records.delete(made.id, zone_id=zid)
    assert cf.store.records("example.org") == []
    with pytest.raises(cloudflare.NotFoundError) as err:
        client.dns.records.get(made.id, zone_id=zid)
    assert err.value.body["errors"][0]["code"] == 81044  # type: ignore[index]


def test_name_exact_and_type_filters(cf: CloudflareStandIn) -> None:
    store = cf.store
    store.put_record("example.org", name="a.example.org", type="AAAA", content="2001:db8::1")
    store.put_record("example.org", name="a.example.org", type="TXT", content="hello")
    store.put_record("example.org", name="aa.example.org", type="AAAA", content="2001:db8::2")
    zid = zone_id(cf)
    client = sdk(cf.url)
    exact = list(client.dns.records.list(zone_id=zid, name={"exact": "a.example.org"}))
    assert sorted(r.type for r in exact) == ["AAAA", "TXT"]
    typed = list(client.dns.records.list(zone_id=zid, name={"exact": "a.example.org"}, type="AAAA"))
    assert [r.content for r in typed] == ["2001:db8::1"]
    plain = http("GET", f"{cf.url}/zones/{zid}/dns_records?name=aa.example.org")[2]
    assert [r["content"] for r in plain["result"]] == ["2001:db8::2"]
    contains = list(client.dns.records.list(zone_id=zid, name={"contains": "a.example"}))
    assert len(contains) == 3


def test_pagination_pages_are_disjoint_and_the_sdk_gets_them_all(cf: CloudflareStandIn) -> None:
    for i in range(237):
        cf.store.put_record(
            "example.org", name="many.example.org", type="AAAA", content=f"2001:db8::{i:x}"
        )
    zid = zone_id(cf)
    page2 = http("GET", f"{cf.url}/zones/{zid}/dns_records?per_page=100&page=2")[2]
    assert page2["result_info"] == {
        "page": 2, "per_page": 100, "count": 100, "total_count": 237, "total_pages": 3,
    }  # fmt: skip
    got = list(sdk(cf.url).dns.records.list(zone_id=zid, per_page=50))
    assert len({r.id for r in got}) == 237
    gets = [p for m, p, _ in cf.requests if m == "GET" and p.endswith("/dns_records")]
    assert len(gets) == 1 + 6  # the raw page, then 5 full SDK pages and the empty one


def test_bad_token_is_400_1000_and_read_only_token_cannot_write(cf: CloudflareStandIn) -> None:
    status, _, body = http("GET", f"{cf.url}/zones", token="not-the-token-at-all")
    assert status == 400  # what users report the real API answers, not 401
    assert body == {
        "success": False,
        "errors": [{"code": 1000, "message": "Invalid API Token"}],
        "messages": [],
        "result": None,
    }
    assert http("GET", f"{cf.url}/zones", token=None)[0] == 400
    zid = zone_id(cf)
    assert http("GET", f"{cf.url}/zones/{zid}/dns_records", token=READ_TOKEN)[0] == 200
    with pytest.raises(cloudflare.PermissionDeniedError):
        sdk(cf.url, READ_TOKEN).dns.records.create(
            zone_id=zid, name="x.example.org", type="AAAA", content="2001:db8::1", ttl=1
        )
    assert cf.store.records("example.org") == []


def test_a_malformed_token_is_400_6003_with_6111(cf: CloudflareStandIn) -> None:
    status, _, body = http("GET", f"{cf.url}/zones", token="two words")
    chain = [{"code": 6111, "message": "Invalid format for Authorization header"}]
    assert status == 400
    assert body["errors"] == [
        {"code": 6003, "message": "Invalid request headers", "error_chain": chain}
    ]


def test_a_fault_can_answer_with_a_given_code(cf: CloudflareStandIn) -> None:
    # The real API has also been seen refusing an unknown token with 403 10000.
    cf.store.inject(Fault(status=403, code=10000, message="Authentication error"))
    status, _, body = http("GET", f"{cf.url}/zones")
    assert (status, body["errors"]) == (403, [{"code": 10000, "message": "Authentication error"}])
    assert http("GET", f"{cf.url}/zones")[0] == 200


def test_conflicts_answer_with_the_real_error_codes(cf: CloudflareStandIn) -> None:
    zid = zone_id(cf)
    body = {"name": "w.example.org", "type": "AAAA", "content": "2001:db8::1", "ttl": 1}
    assert http("POST", f"{cf.url}/zones/{zid}/dns_records", body=body)[0] == 200
    status, _, same = http("POST", f"{cf.url}/zones/{zid}/dns_records", body=body)
    assert (status, same["errors"][0]["code"]) == (400, 81058)
    cname = {"name": "w", "type": "CNAME", "content": "elsewhere.example.net", "ttl": 1}
    status, _, clash = http("POST", f"{cf.url}/zones/{zid}/dns_records", body=cname)
    assert (status, clash["errors"][0]["code"]) == (400, 81053)
    bad = {**body, "content": "192.0.2.1"}
    status, _, invalid = http("POST", f"{cf.url}/zones/{zid}/dns_records", body=bad)
    assert status == 400 and invalid["success"] is False
    assert len(cf.store.records("example.org")) == 1


@pytest.mark.parametrize("content", ["2001:db8::5%eth0", "192.0.2.1", "2001:db8::5/64", "vm1"])
def test_invalid_aaaa_content_is_refused_as_the_real_api_does(
    cf: CloudflareStandIn, content: str
) -> None:
    client = sdk(cf.url)
    with pytest.raises(cloudflare.BadRequestError) as err:
        client.dns.records.create(
            zone_id=zone_id(cf), name="z.example.org", type="AAAA", content=content, ttl=1
        )
    assert err.value.body == {
        "success": False,
        "errors": [
            {"code": 9006, "message": "Content for AAAA record must be a valid IPv6 address."}
        ],
        "messages": [],
        "result": None,
    }
    made = client.dns.records.create(
        zone_id=zone_id(cf), name="z.example.org", type="AAAA", content="2001:db8::5", ttl=1
    )
    assert made is not None
    with pytest.raises(cloudflare.BadRequestError):  # an update is checked the same way
        client.dns.records.update(
            made.id, zone_id=zone_id(cf), name="z.example.org", type="AAAA", content=content, ttl=1
        )
    assert [r["content"] for r in cf.store.records("example.org")] == ["2001:db8::5"]


def test_unknown_zone_id_is_7003(cf: CloudflareStandIn) -> None:
    status, _, body = http("GET", f"{cf.url}/zones/{'f' * 32}/dns_records")
    assert (status, body["errors"][0]["code"]) == (400, 7003)


def test_injected_429_carries_retry_after_then_clears(cf: CloudflareStandIn) -> None:
    cf.store.inject(Fault(status=429, retry_after=7))
    status, headers, body = http("GET", f"{cf.url}/zones")
    assert status == 429 and headers["Retry-After"] == "7"
    assert body["errors"][0]["code"] == 971
    assert http("GET", f"{cf.url}/zones")[0] == 200


def test_committed_500_creates_the_record_although_the_client_sees_an_error(
    cf: CloudflareStandIn,
) -> None:
    cf.store.inject(Fault(status=500, method="POST", commit=True))
    with pytest.raises(cloudflare.InternalServerError):
        sdk(cf.url).dns.records.create(
            zone_id=zone_id(cf), name="c.example.org", type="AAAA", content="2001:db8::c", ttl=1
        )
    assert [r["content"] for r in cf.store.records("example.org")] == ["2001:db8::c"]


def test_the_sdks_own_retry_turns_a_create_that_happened_into_an_error(
    cf: CloudflareStandIn,
) -> None:
    # Why opslib.host.cloudflare.dns turns the SDK's retries off: the create wrote the record but
    # answered 500; the SDK sends it again and the API refuses the twin (81058),
    # so the caller sees a failure for a record that exists. max_retries=1: fast.
    cf.store.inject(Fault(status=500, method="POST", commit=True))
    client = cloudflare.Cloudflare(api_token=TOKEN, base_url=cf.url, max_retries=1)
    with pytest.raises(cloudflare.BadRequestError) as err:
        client.dns.records.create(
            zone_id=zone_id(cf), name="t.example.org", type="TXT", content="v=1", ttl=1
        )
    assert err.value.body["errors"][0]["code"] == 81058  # type: ignore[index]
    assert len(cf.store.records("example.org", name="t.example.org")) == 1
    assert [m for m, _, _ in cf.requests].count("POST") == 2


def test_state_file_is_shared_with_another_store(tmp_path: Path) -> None:
    state = tmp_path / "cf.json"
    with CloudflareStandIn(token=TOKEN, state_file=state) as server:
        zid = zone_id(server)
        body = {"name": "s.example.org", "type": "AAAA", "content": "2001:db8::5", "ttl": 1}
        http("POST", f"{server.url}/zones/{zid}/dns_records", body=body)
        other = Store(state)
        [record] = other.records("example.org", name="s.example.org")
        other.change_record(record["id"], content="2001:db8::6")  # drift behind the API
        listed = http("GET", f"{server.url}/zones/{zid}/dns_records")[2]["result"]
        assert [r["content"] for r in listed] == ["2001:db8::6"]
    assert TOKEN not in state.read_text()


def test_process_entry_serves_and_keeps_state_across_restarts(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    state = tmp_path / "state.json"

    def run() -> tuple[subprocess.Popen[str], str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "opslib.lab.cloudflare.api", "--port", "0",
             "--state", str(state), "--zones", "example.org", "example.net",
             "--token-file", str(token_file)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        line = proc.stdout.readline()  # bounded: the server prints it or exits
        assert line.startswith("listening on http://127.0.0.1:"), proc.stderr
        return proc, line.split()[-1]

    proc, url = run()
    try:
        zid = next(iter(sdk(url).zones.list(name="example.net"))).id
        sdk(url).dns.records.create(
            zone_id=zid, name="p.example.net", type="AAAA", content="2001:db8::7", ttl=1
        )
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    proc, url = run()
    try:
        got = list(sdk(url).dns.records.list(zone_id=zid))
        assert [r.content for r in got] == ["2001:db8::7"]
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    assert TOKEN not in state.read_text()


def test_lab_service_starts_once_serves_with_its_token_and_stops(tmp_path: Path) -> None:
    from opslib.lab.cloudflare import service as service
    from opslib.lab.config import Lab

    lab = Lab(prefix="obu", base=tmp_path)
    try:
        service.SERVICE.up(lab)
        pid = service.lab_running(lab)
        service.SERVICE.up(lab)  # a second up leaves the running one alone
        assert pid and service.lab_running(lab) == pid
        assert service.lab_token_file(lab).stat().st_mode & 0o077 == 0
        token = service.lab_token_file(lab).read_text().strip()
        zones = list(sdk(service.lab_url(lab), token).zones.list(name="example.org"))
        assert [z.name for z in zones] == ["example.org"]
        assert service.lab_status(lab)[0]["state"] == "running"
    finally:
        service.SERVICE.down(lab)
    assert service.lab_running(lab) is None
    assert procs.gone(pid)  # exited (or a zombie awaiting its parent), not just unlisted


# -- against Cloudflare's published OpenAPI schema (cloudflare/api-schemas, openapi.json) --
# components/schemas/zones_zone: "required" (what every zone object carries).
ZONE_REQUIRED = (
    "id", "name", "development_mode", "owner", "account", "meta", "name_servers",
    "original_name_servers", "original_registrar", "original_dnshost", "created_on",
    "modified_on", "activated_on",
)  # fmt: skip


def test_zone_objects_carry_every_field_the_schema_requires(cf: CloudflareStandIn) -> None:
    listed = http("GET", f"{cf.url}/zones")[2]["result"]
    single = http("GET", f"{cf.url}/zones/{zone_id(cf)}")[2]["result"]
    for zone in (*listed, single):
        assert set(ZONE_REQUIRED) <= set(zone), set(ZONE_REQUIRED) - set(zone)
    got = sdk(cf.url).zones.get(zone_id=zone_id(cf))
    assert got is not None and (got.original_registrar, got.original_dnshost) == (None, None)


@pytest.mark.parametrize(
    ("path", "good", "bad", "default"),
    [
        # GET /zones: per_page minimum 5, maximum 50, default 20
        ("zones", (5, 50), (4, 51), 20),
        # GET /zones/{zone_id}/dns_records: minimum 1, maximum 5,000,000, default 100
        ("dns_records", (1, 5_000_000), (0, 5_000_001), 100),
    ],
)
def test_per_page_has_each_endpoints_own_range(
    cf: CloudflareStandIn, path: str, good: tuple[int, int], bad: tuple[int, int], default: int
) -> None:
    client = sdk(cf.url)
    zid = zone_id(cf)
    cf.store.put_record("example.org", name="p.example.org", type="TXT", content="one")

    def listing(per_page: int | None) -> Any:
        extra = {} if per_page is None else {"per_page": per_page}
        if path == "zones":
            return client.zones.with_raw_response.list(**extra).parse()
        return client.dns.records.with_raw_response.list(zone_id=zid, **extra).parse()

    assert listing(None).result_info.per_page == default
    for per_page in good:
        page = listing(per_page)
        assert page.result_info.per_page == per_page and len(page.result) == 1
    for per_page in bad:
        with pytest.raises(cloudflare.BadRequestError) as err:
            listing(per_page)
        assert f"between {good[0]} and {good[1]}" in err.value.body["errors"][0]["message"]  # type: ignore[index]


def test_an_mx_record_requires_a_priority_and_keeps_it(cf: CloudflareStandIn) -> None:
    zid = zone_id(cf)
    mx = {"name": "example.org", "type": "MX", "content": "mail.example.org", "ttl": 1}
    status, _, body = http("POST", f"{cf.url}/zones/{zid}/dns_records", body=mx)
    assert (status, body["errors"]) == (
        400,
        [{"code": 9100, "message": "priority is a required field."}],
    )
    for bad in (-1, 65536, 1.5, "10", True):
        status, _, body = http(
            "POST", f"{cf.url}/zones/{zid}/dns_records", body={**mx, "priority": bad}
        )
        assert (status, body["errors"][0]["code"]) == (400, 9100), bad
    assert cf.store.records("example.org") == []
    client = sdk(cf.url)
    made = client.dns.records.create(
        zone_id=zid, name="example.org", type="MX", content="mail.example.org", priority=0, ttl=1
    )
    assert made is not None and made.priority == 0  # 0 is a priority, not a missing one
    edited = client.dns.records.edit(made.id, zone_id=zid, type="MX", name="example.org", ttl=300)
    assert edited is not None and (edited.priority, edited.ttl) == (0, 300)  # PATCH keeps it
    put = client.dns.records.update(
        made.id, zone_id=zid, name="example.org", type="MX", content="mx2.example.org",
        priority=20, ttl=1,
    )  # fmt: skip
    assert put is not None and put.priority == 20
    (listed,) = client.dns.records.list(zone_id=zid, type="MX")
    assert (listed.content, listed.priority) == ("mx2.example.org", 20)
    got = client.dns.records.get(made.id, zone_id=zid)
    assert got is not None and got.priority == 20
    status, _, body = http(
        "PUT", f"{cf.url}/zones/{zid}/dns_records/{made.id}", body=mx
    )  # PUT replaces: a priority is due again
    assert (status, body["errors"][0]["code"]) == (400, 9100)
    aaaa = client.dns.records.create(
        zone_id=zid, name="v.example.org", type="AAAA", content="2001:db8::1", ttl=1
    )
    assert "priority" not in http("GET", f"{cf.url}/zones/{zid}/dns_records/{aaaa.id}")[2]["result"]
    drift = cf.store.put_record(
        "example.org", name="example.org", type="MX", content="mx3.example.org", priority=30
    )
    assert drift["priority"] == 30
