"""A Cloudflare v4 API stand-in for the lab and the tests.

The official ``cloudflare`` SDK talks to it through ``base_url`` exactly as it
would to the real API: the same paths under ``/client/v4``, the response
envelope ``{success, errors, messages, result, result_info}``, the error codes
the real API answers with, page-number pagination, and Bearer-token auth.

Implemented: ``GET /zones`` (``name=`` filter), ``GET /zones/{id}``,
``GET /user/tokens/verify``, and DNS records: list (``name``/``name.exact``/
``name.contains``/``name.startswith``/``name.endswith``, ``type``, ``content``,
``proxied``, ``page``, ``per_page``), create (POST), get, update (PUT), edit
(PATCH) and delete.

Faults (:class:`Fault`) make it answer 429 with ``Retry-After``, 5xx, or late,
and can commit a change before failing: a create that did happen but answered
500 is what makes blind POST retries create duplicates.

State lives in memory; with a state file it is persisted after every change
and re-read when another process changed it, so a lab process survives restarts
and tests can inspect and edit it through :class:`Store` while it runs. Tokens
are never written to the state file, never logged and never echoed.

Run as a process (what the lab does)::

    python -m opslib.lab.cloudflare_api --port 0 --state FILE --zones example.org \\
        --token-file TOKEN [--read-token-file TOKEN2]

It prints ``listening on http://127.0.0.1:PORT/client/v4`` once it accepts requests.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from opslib import files
from opslib.errors import HostError, InputError

if TYPE_CHECKING:
    from opslib.lab.config import Lab

API_PREFIX = "/client/v4"
PROXIABLE_TYPES = frozenset({"A", "AAAA", "CNAME"})
SUPPORTED_TYPES = frozenset({"A", "AAAA", "CNAME", "TXT", "MX", "NS"})
# Credentials of an Authorization header (RFC 7235 token68); anything else, a space
# or a quote in the token say, is a malformed header to the API (6003/6111).
_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")
# The real API's limits for dns_records pagination.
DEFAULT_PER_PAGE = 100
MIN_PER_PAGE, MAX_PER_PAGE = 5, 5_000_000

Json = dict[str, Any]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def zone_id_for(name: str) -> str:
    """A stable 32-hex zone id, so that ids survive restarts of the stand-in."""
    return hashlib.md5(name.encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class Fault:
    """Make the next ``count`` matching requests misbehave.

    ``status`` 0 answers normally (use with ``delay``); 429 adds ``Retry-After``.
    ``commit`` does the work first and then answers ``status``: the request
    took effect although the client saw an error.
    """

    status: int = 500
    count: int = 1
    method: str = ""  # only this HTTP method ("" = any)
    path_contains: str = ""  # only paths containing this ("" = any)
    retry_after: int | None = None
    commit: bool = False
    delay: float = 0.0  # seconds to wait before answering
    code: int = 0  # the error code to answer with (0 = one that fits status)
    message: str = ""  # its message ("" = one that fits status)

    def matches(self, method: str, path: str) -> bool:
        return (not self.method or self.method == method) and self.path_contains in path


class ApiFailure(Exception):
    """An error answer in the real API's shape."""

    def __init__(
        self, status: int, code: int, message: str, *, chain: tuple[tuple[int, str], ...] = ()
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.chain = status, code, message, chain

    def body(self) -> Json:
        error: Json = {"code": self.code, "message": self.message}
        if self.chain:
            error["error_chain"] = [{"code": c, "message": m} for c, m in self.chain]
        return {"success": False, "errors": [error], "messages": [], "result": None}


def _validation(message: str, code: int = 9000) -> ApiFailure:
    # Since October 2024 the API answers a DNS validation error with its root cause
    # directly, no longer wrapped in 1004 "DNS Validation Error" with an error_chain
    # (Cloudflare's API deprecations page, "DNS Records: Error chains for DNS validation errors").
    return ApiFailure(400, code, message)


# -- state ---------------------------------------------------------------------


def _empty_state(zones: tuple[str, ...]) -> Json:
    state: Json = {"zones": {}, "records": {}, "faults": []}
    for zone in zones:
        _add_zone(state, zone)
    return state


def _add_zone(state: Json, name: str) -> None:
    name = name.lower().rstrip(".")
    if name in state["zones"]:
        return
    zid = zone_id_for(name)
    state["zones"][name] = {"id": zid, "name": name, "created_on": _now()}
    state["records"].setdefault(zid, [])


class Store:
    """The stand-in's state: in memory, or in a JSON file shared between processes.

    Every access is a short transaction under a lock (a thread lock, plus
    ``flock`` on ``FILE.lock`` when file-backed), so a test process can edit
    the file of a running stand-in without losing either side's changes.
    """

    def __init__(self, path: str | Path | None = None, *, zones: tuple[str, ...] = ()) -> None:
        self.path = Path(path) if path else None
        self._lock = threading.RLock()
        self._data = _empty_state(zones)
        if self.path:
            with self.transaction() as data:
                for zone in zones:
                    _add_zone(data, zone)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Json]:
        with self._lock, self._file_lock():
            if self.path and self.path.exists():
                self._data = json.loads(self.path.read_text())
            before = json.dumps(self._data, sort_keys=True)
            yield self._data
            if self.path and (
                not self.path.exists() or json.dumps(self._data, sort_keys=True) != before
            ):
                self._write()

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        if not self.path:
            yield
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{self.path}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self) -> None:
        assert self.path is not None
        # atomic: a reader never sees half a file
        files.atomic_write(self.path, json.dumps(self._data, indent=1, sort_keys=True))

    # -- the helper API tests and the lab use ------------------------------------

    def zone_id(self, zone: str) -> str:
        with self.transaction() as data:
            found = data["zones"].get(zone.lower().rstrip("."))
            if not found:
                raise KeyError(f"the stand-in has no zone {zone}")
            return str(found["id"])

    def add_zone(self, zone: str) -> str:
        with self.transaction() as data:
            _add_zone(data, zone)
        return self.zone_id(zone)

    def records(self, zone: str, *, name: str = "", type: str = "") -> list[Json]:
        """Records of ``zone``, optionally only those of one name and/or type."""
        zid = self.zone_id(zone)
        with self.transaction() as data:
            return [
                dict(r)
                for r in data["records"].get(zid, [])
                if (not name or r["name"] == name.lower().rstrip("."))
                and (not type or r["type"] == type)
            ]

    def put_record(
        self,
        zone: str,
        *,
        name: str,
        type: str,
        content: str,
        proxied: bool = False,
        ttl: int = 1,
        comment: str | None = None,
    ) -> Json:
        """Add a record behind the API's back (no conflict checks): drift for tests."""
        zid = self.zone_id(zone)
        with self.transaction() as data:
            record = _new_record(
                zone.lower().rstrip("."),
                {
                    "name": name,
                    "type": type,
                    "content": content,
                    "proxied": proxied,
                    "ttl": ttl,
                    "comment": comment,
                },
            )
            data["records"][zid].append(record)
            return dict(record)

    def change_record(self, record_id: str, **fields: Any) -> Json:
        """Change fields of a record in place (e.g. ``content=``): drift for tests."""
        with self.transaction() as data:
            for records in data["records"].values():
                for record in records:
                    if record["id"] == record_id:
                        record.update(fields, modified_on=_now())
                        return dict(record)
        raise KeyError(f"the stand-in has no record {record_id}")

    def delete_records(self, zone: str, *, name: str = "", type: str = "") -> int:
        """Delete the matching records; returns how many."""
        doomed = {r["id"] for r in self.records(zone, name=name, type=type)}
        with self.transaction() as data:
            zid = data["zones"][zone.lower().rstrip(".")]["id"]
            data["records"][zid] = [r for r in data["records"][zid] if r["id"] not in doomed]
        return len(doomed)

    def inject(self, *faults: Fault) -> None:
        with self.transaction() as data:
            data["faults"].extend(dataclasses.asdict(f) for f in faults)

    def clear_faults(self) -> None:
        with self.transaction() as data:
            data["faults"] = []

    def faults(self) -> list[Fault]:
        with self.transaction() as data:
            return [Fault(**f) for f in data["faults"]]


def _take_fault(data: Json, method: str, path: str) -> Fault | None:
    for raw in data["faults"]:
        fault = Fault(**raw)
        if fault.count > 0 and fault.matches(method, path):
            raw["count"] -= 1
            data["faults"] = [f for f in data["faults"] if f["count"] > 0]
            return fault
    return None


# -- records -------------------------------------------------------------------


def _fqdn(zone: str, name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise _validation("DNS record name is required.", 9005)
    name = name.strip().lower().rstrip(".")
    if name == "@":
        return zone
    if name != zone and not name.endswith("." + zone):
        name = f"{name}.{zone}"  # the API takes names relative to the zone, too
    return name


def _content(type_: str, content: Any) -> str:
    if not isinstance(content, str) or not content:
        raise _validation("DNS record content is required.", 9007)
    if type_ in ("A", "AAAA"):
        # Code and text as users report the real API's answers (9005 for A, 9006 for
        # AAAA). Its schema types the content as an IPv4 / IPv6 address, which has no
        # zone index (2001:db8::5%eth0), although Python's ipaddress accepts one.
        version, code = (4, 9005) if type_ == "A" else (6, 9006)
        try:
            addr = ipaddress.ip_address(content)
        except ValueError:
            addr = None
        if addr is None or addr.version != version or "%" in content:
            raise _validation(
                f"Content for {type_} record must be a valid IPv{version} address.", code
            )
        return str(addr)  # stored in canonical (compressed) form, as the API does
    return content


def _ttl(value: Any) -> int:
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise _validation(
            "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic.", 9021
        )
    ttl = int(value)
    if ttl != 1 and not 60 <= ttl <= 86400:
        raise _validation(
            "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic.", 9021
        )
    return ttl


def _new_record(zone: str, body: Mapping[str, Any], *, record_id: str = "") -> Json:
    type_ = body.get("type")
    if not isinstance(type_, str) or type_ not in SUPPORTED_TYPES:
        raise _validation(f"Invalid or unsupported DNS record type {type_!r}.", 9008)
    proxied = body.get("proxied", False)
    if not isinstance(proxied, bool):
        raise _validation("proxied must be a boolean.", 9003)
    if proxied and type_ not in PROXIABLE_TYPES:
        raise _validation(f"This record type cannot be proxied: {type_}.", 9004)
    ttl = 1 if proxied else _ttl(body.get("ttl"))  # proxied records always get Auto TTL
    comment = body.get("comment")
    now = _now()
    return {
        "id": record_id or uuid.uuid4().hex,
        "name": _fqdn(zone, body.get("name")),
        "type": type_,
        "content": _content(type_, body.get("content")),
        "proxiable": type_ in PROXIABLE_TYPES,
        "proxied": proxied,
        "ttl": ttl,
        "settings": body.get("settings") or {},
        "meta": {},
        "comment": comment if isinstance(comment, str) and comment else None,
        "tags": list(body.get("tags") or []),
        "created_on": now,
        "modified_on": now,
    }


def _check_conflicts(records: list[Json], new: Json) -> None:
    others = [r for r in records if r["id"] != new["id"] and r["name"] == new["name"]]
    address_like = {"A", "AAAA", "CNAME"}
    if new["type"] in address_like and any(
        r["type"] in address_like and (r["type"] == "CNAME" or new["type"] == "CNAME")
        for r in others
    ):
        raise ApiFailure(400, 81053, "An A, AAAA, or CNAME record with that host already exists.")
    if any(r["type"] == new["type"] and r["content"] == new["content"] for r in others):
        raise ApiFailure(400, 81058, "An identical record already exists.")


def _name_matches(name: str, query: Mapping[str, str]) -> bool:
    checks = {
        "name": lambda v: name == v,
        "name.exact": lambda v: name == v,
        "name.contains": lambda v: v in name,
        "name.startswith": lambda v: name.startswith(v),
        "name.endswith": lambda v: name.endswith(v),
    }
    return all(
        check(query[key].lower().rstrip(".")) for key, check in checks.items() if key in query
    )


def _int_param(query: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    raw = query.get(key)
    if raw is None:
        return default
    try:
        value = int(float(raw))
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ApiFailure(400, 1004, f"{key} must be an integer between {low} and {high}")
    return value


def _page(items: list[Json], query: Mapping[str, str]) -> tuple[list[Json], Json]:
    page = _int_param(query, "page", 1, 1, 10**9)
    per_page = _int_param(query, "per_page", DEFAULT_PER_PAGE, MIN_PER_PAGE, MAX_PER_PAGE)
    chunk = items[(page - 1) * per_page : page * per_page]
    info = {
        "page": page,
        "per_page": per_page,
        "count": len(chunk),
        "total_count": len(items),
        "total_pages": max(1, -(-len(items) // per_page)),
    }
    return chunk, info


# -- the API -------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    body: Json
    headers: tuple[tuple[str, str], ...] = ()


class CloudflareApi:
    """The request logic, independent of the HTTP server (method, path, query, body in)."""

    def __init__(self, store: Store, *, tokens: Mapping[str, str], sleep: Any = time.sleep) -> None:
        # tokens: value -> "edit" | "read". Kept only in memory.
        self._tokens = dict(tokens)
        self.store = store
        self._sleep = sleep
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status), for tests

    def __repr__(self) -> str:
        return f"CloudflareApi(store={self.store.path}, tokens={len(self._tokens)})"

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Answer:
        url = urlsplit(target)
        path = url.path
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        fault: Fault | None = None
        try:
            if not path.startswith(API_PREFIX + "/"):
                raise ApiFailure(404, 7000, "No route for that URI")
            route = path[len(API_PREFIX) :].strip("/").split("/")
            self._authorize(method, headers)
            with self.store.transaction() as data:
                fault = _take_fault(data, method, path)
            if fault and fault.status and not fault.commit:
                raise ApiFailure(*_fault_error(fault))
            answer = self._route(method, route, path, query, body)
            if fault and fault.status:  # committed, but the client hears an error
                raise ApiFailure(*_fault_error(fault))
        except ApiFailure as failure:
            answer = Answer(failure.status, failure.body())
        if fault:
            if fault.delay:
                self._sleep(fault.delay)
            if fault.status == 429:
                answer = dataclasses.replace(
                    answer, headers=(("Retry-After", str(fault.retry_after or 1)),)
                )
        self.requests.append((method, path, answer.status))
        return answer

    def _authorize(self, method: str, headers: Mapping[str, str]) -> None:
        auth = headers.get("authorization")
        if auth is None:
            raise ApiFailure(400, 9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers")
        scheme, _, token = auth.partition(" ")
        if scheme != "Bearer" or not _TOKEN68.fullmatch(token):
            raise ApiFailure(
                400,
                6003,
                "Invalid request headers",
                chain=((6111, "Invalid format for Authorization header"),),
            )
        scope = next(
            (s for t, s in self._tokens.items() if hmac.compare_digest(t.encode(), token.encode())),
            None,
        )
        if scope is None:
            # What users report the real API answers for a token it does not know (it
            # has also been seen to answer 401 or 403 with 10000: inject a Fault for those).
            raise ApiFailure(400, 1000, "Invalid API Token")
        if method != "GET" and scope != "edit":
            raise ApiFailure(403, 10000, "Authentication error")

    def _route(
        self, method: str, route: list[str], path: str, query: Mapping[str, str], raw: bytes
    ) -> Answer:
        body: Json = {}
        if method in ("POST", "PUT", "PATCH"):
            try:
                parsed = json.loads(raw or b"{}")
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                raise ApiFailure(400, 9207, "Request body is invalid.")
            body = parsed
        match (method, route):
            case ("GET", ["user", "tokens", "verify"]):
                return _ok({"id": "0" * 32, "status": "active"})
            case ("GET", ["zones"]):
                return self._list_zones(query)
            case ("GET", ["zones", zid]):
                return _ok(self._zone(zid, path)[1])
            case ("GET", ["zones", zid, "dns_records"]):
                return self._list_records(zid, path, query)
            case ("POST", ["zones", zid, "dns_records"]):
                return self._create(zid, path, body)
            case ("GET", ["zones", zid, "dns_records", rid]):
                return _ok(self._find(zid, rid, path))
            case ("PUT" | "PATCH", ["zones", zid, "dns_records", rid]):
                return self._update(zid, rid, path, body, partial=method == "PATCH")
            case ("DELETE", ["zones", zid, "dns_records", rid]):
                return self._delete(zid, rid, path)
        if route[:1] == ["zones"]:
            raise ApiFailure(405, 10405, f"Method {method} not allowed for this route")
        raise ApiFailure(404, 7000, "No route for that URI")

    def _zone(self, zid: str, path: str) -> tuple[str, Json]:
        with self.store.transaction() as data:
            for name, zone in data["zones"].items():
                if zone["id"] == zid:
                    return name, _zone_json(zone)
        raise ApiFailure(
            400, 7003, f"Could not route to {path}, perhaps your object identifier is invalid?"
        )

    def _list_zones(self, query: Mapping[str, str]) -> Answer:
        with self.store.transaction() as data:
            zones = [_zone_json(z) for _, z in sorted(data["zones"].items())]
        if "name" in query:
            zones = [z for z in zones if z["name"] == query["name"].lower().rstrip(".")]
        chunk, info = _page(zones, {**query, "per_page": query.get("per_page", "20")})
        return _ok(chunk, info)

    def _list_records(self, zid: str, path: str, query: Mapping[str, str]) -> Answer:
        self._zone(zid, path)
        with self.store.transaction() as data:
            records = list(data["records"].get(zid, []))
        content = query.get("content.exact", query.get("content"))
        proxied = query.get("proxied")
        found = [
            r
            for r in records
            if _name_matches(r["name"], query)
            and ("type" not in query or r["type"] == query["type"])
            and (content is None or r["content"] == content)
            and (proxied is None or str(r["proxied"]).lower() == proxied.lower())
        ]
        # A stable order, or pages would overlap and skip records.
        found.sort(key=lambda r: (r["type"], r["name"], r["content"], r["id"]))
        chunk, info = _page(found, query)
        return _ok(chunk, info)

    def _create(self, zid: str, path: str, body: Json) -> Answer:
        zone, _ = self._zone(zid, path)
        record = _new_record(zone, body)
        with self.store.transaction() as data:
            _check_conflicts(data["records"][zid], record)
            data["records"][zid].append(record)
        return _ok(record)

    def _find(self, zid: str, rid: str, path: str) -> Json:
        self._zone(zid, path)
        with self.store.transaction() as data:
            for record in data["records"].get(zid, []):
                if record["id"] == rid:
                    return dict(record)
        raise ApiFailure(404, 81044, "Record does not exist.")

    def _update(self, zid: str, rid: str, path: str, body: Json, *, partial: bool) -> Answer:
        zone, _ = self._zone(zid, path)
        old = self._find(zid, rid, path)
        # PUT replaces the record; PATCH changes only the fields it sends.
        merged = {**old, **body} if partial else body
        record = _new_record(zone, merged, record_id=rid)
        record["created_on"] = old["created_on"]
        with self.store.transaction() as data:
            records = data["records"][zid]
            _check_conflicts(records, record)
            data["records"][zid] = [record if r["id"] == rid else r for r in records]
        return _ok(record)

    def _delete(self, zid: str, rid: str, path: str) -> Answer:
        self._find(zid, rid, path)
        with self.store.transaction() as data:
            data["records"][zid] = [r for r in data["records"][zid] if r["id"] != rid]
        return _ok({"id": rid})


def _fault_error(fault: Fault) -> tuple[int, int, str]:
    if fault.status == 429:
        code, message = 971, "Please wait and consider throttling your request speed"
    elif fault.status >= 500:
        code, message = 10001 if fault.status == 500 else fault.status, "Internal server error"
    else:
        code, message = 10000, "Injected error"
    return fault.status, fault.code or code, fault.message or message


def _zone_json(zone: Json) -> Json:
    return {
        "id": zone["id"],
        "name": zone["name"],
        "status": "active",
        "paused": False,
        "type": "full",
        "development_mode": 0,
        "name_servers": [],
        "original_name_servers": [],
        "created_on": zone["created_on"],
        "modified_on": zone["created_on"],
        "activated_on": zone["created_on"],
        "account": {"id": "0" * 32, "name": "lab"},
        "owner": {"id": None, "type": "user", "email": None},
        "permissions": [],
        "meta": {},
        "plan": {"id": "0" * 32, "name": "Free Website"},
    }


def _ok(result: Any, info: Json | None = None) -> Answer:
    body: Json = {"success": True, "errors": [], "messages": [], "result": result}
    if info is not None:
        body["result_info"] = info
    return Answer(200, body)


# -- the HTTP server -----------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        answer = self.server.api.handle(self.command, self.path, headers, body)
        payload = json.dumps(answer.body).encode()
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for key, value in answer.headers:
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left: the work is done all the same

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:  # request lines only: headers (the token) are never logged
            sys.stderr.write(f"cloudflare-api: {format % args}\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: CloudflareApi, *, verbose: bool) -> None:
        self.api, self.verbose = api, verbose
        self.server_name_ip = address[0]  # the loopback address itself, not a host name
        super().__init__(address, _Handler)


def _loopback(host: str) -> str:
    try:
        if ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise InputError(f"the Cloudflare stand-in listens on loopback only, not {host}")


class CloudflareStandIn:
    """The stand-in as an in-process server: ``with CloudflareStandIn(...) as cf: cf.url``.

    ``store`` is the helper API (records, put_record, change_record, inject);
    ``requests`` lists what the server answered, for tests.
    """

    def __init__(
        self,
        *,
        token: str,
        read_token: str = "",
        zones: tuple[str, ...] = ("example.org",),
        state_file: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        verbose: bool = False,
    ) -> None:
        tokens = {token: "edit", **({read_token: "read"} if read_token else {})}
        self.store = Store(state_file, zones=zones)
        self.api = CloudflareApi(self.store, tokens=tokens)
        self._server = _Server((_loopback(host), port), self.api, verbose=verbose)
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"CloudflareStandIn(url={self.url!r})"

    @property
    def url(self) -> str:
        return f"http://{self._server.server_name_ip}:{self._server.server_port}{API_PREFIX}"

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        return self.api.requests

    def start(self) -> CloudflareStandIn:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="cloudflare-api", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> CloudflareStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _read_token(path: str) -> str:
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise InputError(f"cannot read token file {path}: {exc.strerror}") from exc
    if not token:
        raise InputError(f"token file {path} is empty")
    return token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m opslib.lab.cloudflare_api", description="Cloudflare v4 API stand-in"
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--state", help="JSON state file (kept across restarts)")
    parser.add_argument("--zones", nargs="+", default=["example.org"], metavar="ZONE")
    parser.add_argument("--token-file", required=True, help="file holding the edit token")
    parser.add_argument("--read-token-file", help="file holding a token without edit permission")
    parser.add_argument("--pid-file", help="write the pid here once listening; removed at exit")
    parser.add_argument("--verbose", action="store_true", help="log request lines to stderr")
    args = parser.parse_args(argv)
    try:
        standin = CloudflareStandIn(
            token=_read_token(args.token_file),
            read_token=_read_token(args.read_token_file) if args.read_token_file else "",
            zones=tuple(args.zones),
            state_file=args.state,
            host=args.host,
            port=args.port,
            verbose=args.verbose,
        )
    except (InputError, OSError) as exc:
        print(f"cloudflare-api: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with standin:
        if args.pid_file:
            Path(args.pid_file).write_text(f"{os.getpid()}\n")
        print(f"listening on {standin.url}", flush=True)
        try:
            while not stop.wait(1.0):
                pass
        finally:
            if args.pid_file:
                Path(args.pid_file).unlink(missing_ok=True)
    return 0


# -- the lab service ---------------------------------------------------------------
# `opsbook lab up` starts the stand-in as a process on 127.0.0.1 (control.py finds
# SERVICE here); runbooks reach it with the URL and token file below.

LAB_ZONES = ("example.org",)
LAB_START_TIMEOUT = 15.0


def lab_dir(lab: Lab) -> Path:
    return lab.root / "cloudflare"


def lab_token_file(lab: Lab) -> Path:
    """The edit token (Zone DNS Edit), mode 0600: the runbook's ``token=file:...``."""
    return lab_dir(lab) / "token"


def lab_read_token_file(lab: Lab) -> Path:
    """A token that may read but not edit: for the 403 path."""
    return lab_dir(lab) / "read-token"


def lab_state_file(lab: Lab) -> Path:
    return lab_dir(lab) / "state.json"


def lab_pid_file(lab: Lab) -> Path:
    return lab_dir(lab) / "api.pid"


def lab_port(lab: Lab) -> int:
    # Fixed per prefix, so that parameter files can name the URL (ob: 18783).
    return 18700 + zlib.crc32(lab.prefix.encode()) % 1000


def lab_url(lab: Lab) -> str:
    return f"http://127.0.0.1:{lab_port(lab)}{API_PREFIX}"


def lab_store(lab: Lab) -> Store:
    """The running lab stand-in's state: inspect and change records, inject faults."""
    return Store(lab_state_file(lab))


def lab_running(lab: Lab) -> int | None:
    """The pid of this lab's stand-in, if it runs (never a recycled pid of another program)."""
    from opslib import procs

    return procs.owned_pid(lab_pid_file(lab), __name__, str(lab_state_file(lab)))


def _write_secret(path: Path) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(20) + "\n")


def lab_up(lab: Lab) -> None:
    """Start the lab's stand-in (tokens written on first start); a no-op when it runs."""
    if lab_running(lab):
        return
    _write_secret(lab_token_file(lab))
    _write_secret(lab_read_token_file(lab))
    with open(lab_dir(lab) / "api.log", "ab") as log:  # the child keeps its own copy
        proc = subprocess.Popen(
            [sys.executable, "-m", __name__, "--port", str(lab_port(lab)),
             "--state", str(lab_state_file(lab)), "--zones", *LAB_ZONES,
             "--token-file", str(lab_token_file(lab)),
             "--read-token-file", str(lab_read_token_file(lab)),
             "--pid-file", str(lab_pid_file(lab))],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + LAB_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HostError(
                f"the Cloudflare stand-in exited ({proc.returncode}) at start; "
                f"see {lab_dir(lab) / 'api.log'} (port {lab_port(lab)} in use?)"
            )
        if lab_running(lab):
            return
        time.sleep(0.1)
    proc.terminate()
    raise HostError(f"the Cloudflare stand-in did not start within {LAB_START_TIMEOUT:g} s")


def lab_down(lab: Lab) -> None:
    """Stop the lab's stand-in (its state file stays until the lab directory goes)."""
    from opslib import procs

    pid = lab_running(lab)
    if pid is None:
        return
    procs.terminate([pid])
    lab_pid_file(lab).unlink(missing_ok=True)


def lab_status(lab: Lab) -> list[dict[str, str]]:
    pid = lab_running(lab)
    return [
        {
            "component": "cloudflare-api",
            "name": lab_url(lab),
            "state": "running" if pid else "stopped",
            "detail": f"pid {pid}, token {lab_token_file(lab)}" if pid else "",
        }
    ]


def __getattr__(name: str) -> Any:
    # SERVICE is built on first use: the stand-in process need not import the lab.
    if name == "SERVICE":
        from opslib.lab.services import LabService

        return LabService("cloudflare-api", lab_up, lab_down, lab_status)
    raise AttributeError(name)


if __name__ == "__main__":
    sys.exit(main())
