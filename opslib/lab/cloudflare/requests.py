"""The Cloudflare v4 API's request logic, independent of the HTTP server.

:class:`CloudflareApi` takes method, path, headers and body and gives an
:class:`Answer` in the real API's envelope, after Bearer-token auth and the
faults injected into its :class:`Store`. Implemented: ``GET /zones`` (``name=``
filter), ``GET /zones/{id}``, ``GET /user/tokens/verify``, and DNS records: list
(``name``/``name.exact``/``name.contains``/``name.startswith``/``name.endswith``,
``type``, ``content``, ``proxied``, ``page``, ``per_page``), create (POST), get,
update (PUT), edit (PATCH) and delete.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from opslib.lab.cloudflare.store import (
    ApiFailure,
    Fault,
    Json,
    Store,
    check_conflicts,
    new_record,
    take_fault,
)

API_PREFIX = "/client/v4"
# Credentials of an Authorization header (RFC 7235 token68); anything else, a space
# or a quote in the token say, is a malformed header to the API (6003/6111).
_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")
# Each list endpoint's per_page (default, minimum, maximum), as Cloudflare's OpenAPI schema
# (cloudflare/api-schemas) gives them: GET /zones and GET /zones/{zone_id}/dns_records.
ZONES_PER_PAGE = (20, 5, 50)
RECORDS_PER_PAGE = (100, 1, 5_000_000)


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


def _page(
    items: list[Json], query: Mapping[str, str], limits: tuple[int, int, int]
) -> tuple[list[Json], Json]:
    page = _int_param(query, "page", 1, 1, 10**9)
    per_page = _int_param(query, "per_page", *limits)
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
                fault = take_fault(data, method, path)
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
        chunk, info = _page(zones, query, ZONES_PER_PAGE)
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
        chunk, info = _page(found, query, RECORDS_PER_PAGE)
        return _ok(chunk, info)

    def _create(self, zid: str, path: str, body: Json) -> Answer:
        zone, _ = self._zone(zid, path)
        record = new_record(zone, body)
        with self.store.transaction() as data:
            check_conflicts(data["records"][zid], record)
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
        record = new_record(zone, merged, record_id=rid)
        record["created_on"] = old["created_on"]
        with self.store.transaction() as data:
            records = data["records"][zid]
            check_conflicts(records, record)
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
        # required by the schema's zones_zone, null for a zone that moved from no other host
        "original_registrar": None,
        "original_dnshost": None,
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
