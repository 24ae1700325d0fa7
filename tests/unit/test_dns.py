"""opslib.host.cloudflare.dns against the stand-in: retries we control, safe creates, errors
without the token."""

from __future__ import annotations

import logging
import socket
import time
import traceback
from collections.abc import Iterator

import pytest

from opslib.core.errors import ApiError, InputError
from opslib.host.cloudflare.dns import DnsClient, RecordSpec, RetryPolicy
from opslib.lab.cloudflare.api import CloudflareStandIn
from opslib.lab.cloudflare.store import Fault

TOKEN = "dns-test-token-5f3a9c1e7b"
READ_TOKEN = "dns-read-token-0c4e2a8d6f"
FAST = RetryPolicy(attempts=4, backoff=0.05, max_wait=5.0, timeout=5.0)
SPEC = RecordSpec("vm1.example.org", "AAAA", "2001:db8:2::5054:ff:fe0b:1", proxied=True)


@pytest.fixture
def cf() -> Iterator[CloudflareStandIn]:
    with CloudflareStandIn(token=TOKEN, read_token=READ_TOKEN) as server:
        yield server


@pytest.fixture
def client(cf: CloudflareStandIn) -> Iterator[DnsClient]:
    with DnsClient(token=TOKEN, base_url=cf.url, policy=FAST) as c:
        yield c


def posts(cf: CloudflareStandIn) -> int:
    return sum(1 for method, _, _ in cf.requests if method == "POST")


def test_a_500_after_the_write_leaves_exactly_one_record(
    cf: CloudflareStandIn, client: DnsClient
) -> None:
    cf.store.inject(Fault(status=500, method="POST", commit=True))
    made = client.create_record(client.zone_id("example.org"), SPEC)
    records = cf.store.records("example.org", name=SPEC.name)
    assert [r["id"] for r in records] == [made.id]
    assert posts(cf) == 1  # it looked, found the record, and did not send the create again


def test_a_500_before_the_write_is_retried_once_looked(
    cf: CloudflareStandIn, client: DnsClient
) -> None:
    cf.store.inject(Fault(status=503, method="POST"))
    client.create_record(client.zone_id("example.org"), SPEC)
    assert len(cf.store.records("example.org", name=SPEC.name)) == 1
    assert posts(cf) == 2


def test_a_slow_create_that_times_out_is_not_sent_twice(cf: CloudflareStandIn) -> None:
    slow = RetryPolicy(attempts=3, backoff=1.0, max_wait=5.0, timeout=0.5)
    cf.store.inject(Fault(status=0, method="POST", delay=1.0))
    with DnsClient(token=TOKEN, base_url=cf.url, policy=slow) as c:
        made = c.create_record(c.zone_id("example.org"), SPEC)
    assert made.content == "2001:db8:2:0:5054:ff:fe0b:1"  # as the API spells it
    assert len(cf.store.records("example.org", name=SPEC.name)) == 1
    assert posts(cf) == 1


def test_429_waits_for_retry_after_and_succeeds(cf: CloudflareStandIn, client: DnsClient) -> None:
    zid = client.zone_id("example.org")
    cf.store.inject(Fault(status=429, retry_after=1))
    t0 = time.monotonic()
    assert client.list_records(zid, name=SPEC.name) == []
    assert time.monotonic() - t0 >= 1.0
    assert [s for _, _, s in cf.requests][-2:] == [429, 200]


def test_retry_after_is_capped(cf: CloudflareStandIn) -> None:
    capped = RetryPolicy(attempts=2, backoff=0.05, max_wait=0.2, timeout=5.0)
    waits: list[float] = []  # what the client chose to wait, not how long the machine took
    with DnsClient(token=TOKEN, base_url=cf.url, policy=capped, sleep=waits.append) as c:
        cf.store.inject(Fault(status=429, retry_after=3600))
        c.zone_id("example.org")
    assert waits == [0.2]
    assert [s for _, _, s in cf.requests][-2:] == [429, 200]


def test_endless_5xx_gives_up_after_the_bounded_tries(
    cf: CloudflareStandIn, client: DnsClient
) -> None:
    zid = client.zone_id("example.org")
    cf.store.inject(Fault(status=502, count=100, method="GET"))
    with pytest.raises(ApiError) as err:
        client.list_records(zid, name=SPEC.name)
    assert err.value.status == 502
    assert sum(1 for _, _, s in cf.requests if s == 502) == FAST.attempts


def test_a_create_refused_with_4xx_is_not_retried(cf: CloudflareStandIn, client: DnsClient) -> None:
    zid = client.zone_id("example.org")
    cf.store.put_record("example.org", name=SPEC.name, type="CNAME", content="x.example.net")
    with pytest.raises(ApiError, match="81053"):
        client.create_record(zid, SPEC)
    assert posts(cf) == 1


def test_listing_follows_every_page(cf: CloudflareStandIn, client: DnsClient) -> None:
    for i in range(260):
        cf.store.put_record("example.org", name=SPEC.name, type="AAAA", content=f"2001:db8::{i:x}")
    cf.store.put_record("example.org", name="other.example.org", type="AAAA", content="2001:db8::1")
    found = client.list_records(client.zone_id("example.org"), name=SPEC.name, type="AAAA")
    assert len({r.id for r in found}) == 260


def test_a_5xx_on_a_later_page_is_retried_without_losing_records(
    cf: CloudflareStandIn, client: DnsClient
) -> None:
    for i in range(150):
        cf.store.put_record("example.org", name=SPEC.name, type="AAAA", content=f"2001:db8::{i:x}")
    zid = client.zone_id("example.org")
    cf.store.inject(Fault(status=0, count=1, method="GET"), Fault(status=500, method="GET"))
    assert len(client.list_records(zid, name=SPEC.name)) == 150


def test_unknown_zone_is_one_input_line(client: DnsClient) -> None:
    with pytest.raises(InputError, match=r"no zone example\.net visible"):
        client.zone_id("example.net")


def test_rejected_token_names_the_permission(cf: CloudflareStandIn) -> None:
    wrong = "wrong-token-77777777"
    with DnsClient(token=wrong, base_url=cf.url, policy=FAST) as c, pytest.raises(ApiError) as err:
        c.zone_id("example.org")
    message = str(err.value)
    assert err.value.status == 400
    assert "Zone > DNS > Edit" in message and "\n" not in message
    assert wrong not in message and wrong not in "".join(traceback.format_exception(err.value))


@pytest.mark.parametrize(
    ("token", "fault", "status", "words"),
    [
        # what the stand-in answers, as users report the real API does
        ("wrong-token-77777777", None, 400, "did not accept the token: it is wrong, expired"),
        ("two words", None, 400, "found the token malformed"),
        # other answers the real API has been seen to give
        (TOKEN, Fault(status=401, code=10000, message="Authentication error"), 401,
         "did not accept the token: it is wrong, expired"),
        (TOKEN, Fault(status=403, code=10000, message="Authentication error"), 403,
         "refused the token: it is invalid or lacks permission"),
        (TOKEN, Fault(status=400, code=6003, message="Invalid request headers"), 400,
         "found the token malformed"),
    ],
)  # fmt: skip
def test_each_way_the_api_refuses_a_token_is_named(
    cf: CloudflareStandIn, token: str, fault: Fault | None, status: int, words: str
) -> None:
    if fault:
        cf.store.inject(fault)
    with DnsClient(token=token, base_url=cf.url, policy=FAST) as c, pytest.raises(ApiError) as err:
        c.zone_id("example.org")
    message = str(err.value)
    assert err.value.status == status and words in message, message
    assert "use an API token with Zone > DNS > Edit permission for the zone" in message
    assert "\n" not in message and token not in message
    assert token not in "".join(traceback.format_exception(err.value))


def test_read_only_token_names_the_permission(cf: CloudflareStandIn) -> None:
    with DnsClient(token=READ_TOKEN, base_url=cf.url, policy=FAST) as c:
        zid = c.zone_id("example.org")  # reading works
        with pytest.raises(ApiError) as err:
            c.create_record(zid, SPEC)
    assert err.value.status == 403
    assert "lacks permission" in str(err.value) and "Zone > DNS > Edit" in str(err.value)
    assert READ_TOKEN not in str(err.value)


def test_unreachable_api_is_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}/client/v4"
    with DnsClient(token=TOKEN, base_url=url, policy=FAST) as c, pytest.raises(ApiError) as err:
        c.zone_id("example.org")
    assert f"cannot reach {url}" in str(err.value) and "\n" not in str(err.value)


def test_the_token_is_in_no_repr_log_or_error(
    cf: CloudflareStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # the SDK and httpx log requests at DEBUG
    texts = []
    with DnsClient(token=TOKEN, base_url=cf.url, policy=FAST) as c:
        texts.append(repr(c))
        zid = c.zone_id("example.org")
        cf.store.inject(Fault(status=500, method="POST", commit=True), Fault(status=429))
        c.create_record(zid, SPEC)
        cf.store.inject(Fault(status=500, count=10))
        with pytest.raises(ApiError) as err:
            c.list_records(zid, name=SPEC.name)
        texts.append("".join(traceback.format_exception(err.value)))
    assert caplog.text  # something was logged, so the next line can fail
    for text in [*texts, caplog.text]:
        assert TOKEN not in text


def test_an_empty_token_is_refused_before_any_request() -> None:
    with pytest.raises(InputError, match="token is empty"):
        DnsClient(token="", base_url="http://127.0.0.1:9/client/v4")
