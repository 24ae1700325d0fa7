"""The Cloudflare stand-in's state: zones, DNS records, the record rules, and faults.

:class:`Store` holds the state in memory or in a JSON file shared between
processes (the running stand-in and a test that inspects or edits it).
:func:`new_record` and :func:`check_conflicts` are the rules the real API
applies to DNS records, failing with :class:`ApiFailure` as it does.
:class:`Fault` makes requests misbehave (429, 5xx, late, or committed and then
failed); :func:`take_fault` counts one down. Tokens are never part of the state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import ipaddress
import json
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opslib.core import files

PROXIABLE_TYPES = frozenset({"A", "AAAA", "CNAME"})
SUPPORTED_TYPES = frozenset({"A", "AAAA", "CNAME", "TXT", "MX", "NS"})

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
        priority: int | None = None,
    ) -> Json:
        """Add a record behind the API's back (no conflict checks): drift for tests.
        ``priority`` is for MX records (which require one)."""
        zid = self.zone_id(zone)
        with self.transaction() as data:
            record = new_record(
                zone.lower().rstrip("."),
                {
                    "name": name,
                    "type": type,
                    "content": content,
                    "proxied": proxied,
                    "ttl": ttl,
                    "comment": comment,
                    "priority": priority,
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


def take_fault(data: Json, method: str, path: str) -> Fault | None:
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


def _priority(value: Any) -> int:
    # The schema: "Required for MX, SRV and URI records", a number from 0 to 65535; users
    # report the API's answer to a missing one as 9100 "priority is a required field."
    # (an integer: an MX preference is a 16-bit integer, RFC 1035).
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise _validation("priority is a required field.", 9100)
    if not 0 <= value <= 65535:
        raise _validation("priority must be between 0 and 65535.", 9100)
    return int(value)


def new_record(zone: str, body: Mapping[str, Any], *, record_id: str = "") -> Json:
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
    # unused by the other types: the API keeps (and answers) a priority only where it counts
    priority = {"priority": _priority(body.get("priority"))} if type_ == "MX" else {}
    return {
        "id": record_id or uuid.uuid4().hex,
        "name": _fqdn(zone, body.get("name")),
        "type": type_,
        "content": _content(type_, body.get("content")),
        "proxiable": type_ in PROXIABLE_TYPES,
        "proxied": proxied,
        "ttl": ttl,
        **priority,
        "settings": body.get("settings") or {},
        "meta": {},
        "comment": comment if isinstance(comment, str) and comment else None,
        "tags": list(body.get("tags") or []),
        "created_on": now,
        "modified_on": now,
    }


def check_conflicts(records: list[Json], new: Json) -> None:
    others = [r for r in records if r["id"] != new["id"] and r["name"] == new["name"]]
    address_like = {"A", "AAAA", "CNAME"}
    if new["type"] in address_like and any(
        r["type"] in address_like and (r["type"] == "CNAME" or new["type"] == "CNAME")
        for r in others
    ):
        raise ApiFailure(400, 81053, "An A, AAAA, or CNAME record with that host already exists.")
    if any(r["type"] == new["type"] and r["content"] == new["content"] for r in others):
        raise ApiFailure(400, 81058, "An identical record already exists.")
