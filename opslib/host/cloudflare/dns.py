"""Cloudflare DNS through the official ``cloudflare`` SDK, with retries we control.

The SDK retries 408/409/429/5xx twice, POST included: a create whose answer
was lost (500 after the write, a timeout) is sent again and, on a server that
accepts it, makes a second record. So the client is built with
``max_retries=0`` and :class:`DnsClient` retries itself:

- reads, PUT, PATCH and DELETE (idempotent): retried on 429 (honouring
  ``Retry-After``, capped), 5xx, timeouts and connection errors, a bounded
  number of times;
- create (POST): never blindly. After an error or timeout it first lists the
  records of that name and type; if the record is there the create did happen,
  otherwise it is sent again.

This module is the one place opslib calls the SDK: its errors become
:class:`opslib.core.errors.ApiError` here. The token is kept in the SDK client
only; it is in no repr, log line or exception message of opslib.
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import cloudflare

from opslib.core.changes import JsonData
from opslib.core.errors import ApiError, InputError

log = logging.getLogger(__name__)

T = TypeVar("T")
NEEDED_PERMISSION = "Zone > DNS > Edit"
# Real API error codes we branch on.
IDENTICAL_RECORD = 81058
RECORD_MISSING = 81044
# How the API refuses a token. Cloudflare documents no list; these are the answers
# users report: 400 with 6003 "Invalid request headers" / 6111 "Invalid format for
# Authorization header" (or 9106, no header) for something that is not a token;
# 400 with 1000 "Invalid API Token" (also 401) for a token it does not know; 403
# with 10000 "Authentication error" or 9109 for one invalid or lacking permission.
MALFORMED_TOKEN = frozenset({6003, 6111, 9106})
UNKNOWN_TOKEN = frozenset({1000})
REFUSED_TOKEN = frozenset({10000, 9109})
PER_PAGE = 100


@dataclass(frozen=True)
class RecordSpec:
    """A DNS record as we want it."""

    name: str
    type: str
    content: str
    proxied: bool = False
    ttl: int = 1  # 1 = automatic
    comment: str = ""

    def text(self) -> str:
        return record_text(self.name, self.type, self.content, self.proxied, self.ttl, self.comment)


@dataclass(frozen=True)
class DnsRecord(JsonData):
    """A DNS record as the API reports it."""

    id: str
    name: str
    type: str
    content: str
    proxied: bool
    ttl: int
    comment: str = ""

    @property
    def spec(self) -> RecordSpec:
        """What this record is, without its id: what re-creating it would ask for."""
        return RecordSpec(self.name, self.type, self.content, self.proxied, self.ttl, self.comment)

    def text(self) -> str:
        return self.spec.text()


def same_content(type: str, a: str, b: str) -> bool:
    """Whether two contents are the same: addresses compare as addresses.

    The API stores addresses in canonical form (``2001:db8:2:0:...``, not
    ``2001:db8:2::...``), so a text comparison would miss a record that exists.
    """
    if type in ("A", "AAAA"):
        try:
            return ipaddress.ip_address(a) == ipaddress.ip_address(b)
        except ValueError:
            pass
    return a == b


def record_text(name: str, type: str, content: str, proxied: bool, ttl: int, comment: str) -> str:
    """One zone-file-like line per record, for plans and diffs."""
    line = f"{name}. {'auto' if ttl == 1 else ttl} IN {type} {content}"
    line += " ; proxied" if proxied else " ; DNS only"
    return line + (f" ; {comment}" if comment else "") + "\n"


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # tries per call, the first included
    backoff: float = 0.5  # first wait after a 5xx or timeout; doubles each time
    max_wait: float = 30.0  # cap on any single wait, Retry-After included
    timeout: float = 15.0  # seconds per HTTP request


def _api_status(exc: Exception) -> int | None:
    return exc.status_code if isinstance(exc, cloudflare.APIStatusError) else None


def _api_codes(exc: Exception) -> list[tuple[int, str]]:
    body = getattr(exc, "body", None)
    errors = body.get("errors") if isinstance(body, dict) else None
    found: list[tuple[int, str]] = []
    for err in errors or []:
        if isinstance(err, dict):
            found.append((int(err.get("code") or 0), str(err.get("message") or "")))
            for sub in err.get("error_chain") or []:
                if isinstance(sub, dict):
                    found.append((int(sub.get("code") or 0), str(sub.get("message") or "")))
    return found


def _token_problem(status: int | None, codes: list[tuple[int, str]]) -> str:
    """What a 4xx answer says is wrong with the token: "malformed", "unknown",
    "refused" (invalid or lacking permission), or "" when it is about something else."""
    if status is None or not 400 <= status < 500:
        return ""
    found = {code for code, _ in codes}
    if found & MALFORMED_TOKEN:
        return "malformed"
    if status == 401 or found & UNKNOWN_TOKEN:
        return "unknown"
    if status == 403 or found & REFUSED_TOKEN:
        return "refused"
    return ""


def _retryable(exc: Exception) -> bool:
    status = _api_status(exc)
    if status is not None:
        return status == 429 or status >= 500
    return isinstance(exc, cloudflare.APIConnectionError)  # timeouts included


class DnsClient:
    """DNS records of Cloudflare zones. ``base_url`` "" is the SDK's default API."""

    def __init__(
        self,
        *,
        token: str,
        base_url: str = "",
        policy: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not token:
            raise InputError("the Cloudflare API token is empty; check the token source")
        self.base_url = base_url
        self.policy = policy
        self._sleep = sleep
        self._token = token  # only to scrub it from messages, should an API ever echo it
        self._sdk = cloudflare.Cloudflare(
            api_token=token,
            base_url=base_url or None,
            max_retries=0,
            timeout=policy.timeout,
        )
        # The SDK would prefer key/email credentials from the environment over the token.
        self._sdk.api_key = self._sdk.api_email = self._sdk.user_service_key = None

    def __repr__(self) -> str:
        return f"DnsClient(base_url={self.base_url!r})"

    def close(self) -> None:
        self._sdk.close()

    def __enter__(self) -> DnsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- error translation and retries ----------------------------------------

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def _error(self, exc: Exception, action: str) -> ApiError:
        status = _api_status(exc)
        codes = _api_codes(exc)
        detail = "; ".join(f"{c} {m}" for c, m in codes) or type(exc).__name__
        problem = _token_problem(status, codes)
        fix = f"use an API token with {NEEDED_PERMISSION} permission for the zone"
        if problem == "malformed":
            msg = (
                f"{action}: the Cloudflare API found the token malformed (HTTP {status}: {detail});"
                f" the token source must hold the token alone, on one line; {fix}"
            )
        elif problem == "unknown":
            msg = (
                f"{action}: the Cloudflare API did not accept the token: it is wrong, expired or"
                f" revoked (HTTP {status}: {detail}); {fix}"
            )
        elif problem == "refused":
            msg = (
                f"{action}: the Cloudflare API refused the token: it is invalid or lacks"
                f" permission (HTTP {status}: {detail}); {fix}"
            )
        elif status is not None:
            msg = f"{action}: Cloudflare API answered HTTP {status}: {detail}"
        elif isinstance(exc, cloudflare.APITimeoutError):
            msg = f"{action}: no answer from the Cloudflare API within {self.policy.timeout:g} s"
        elif isinstance(exc, cloudflare.APIConnectionError):
            where = self.base_url or "the Cloudflare API"
            msg = f"{action}: cannot reach {where} ({exc.__cause__ or exc})"
        else:
            msg = f"{action}: {type(exc).__name__}"
        return ApiError(self._scrub(msg), status)

    def _wait(self, exc: Exception, attempt: int) -> float:
        wait = self.policy.backoff * 2 ** (attempt - 1)
        response = getattr(exc, "response", None)
        header = response.headers.get("retry-after") if response is not None else None
        if header:
            try:
                wait = float(header)
            except ValueError:
                when = email.utils.parsedate_to_datetime(header)
                wait = when.timestamp() - time.time() if when else wait
        return min(max(wait, 0.0), self.policy.max_wait)

    def _pause(self, exc: Exception, attempt: int, action: str) -> None:
        wait = self._wait(exc, attempt)
        status = _api_status(exc)
        why = f"HTTP {status}" if status else type(exc).__name__
        log.info("%s: %s, waiting %.1f s before try %d", action, why, wait, attempt + 1)
        self._sleep(wait)

    def _call(self, action: str, fn: Callable[[], T]) -> T:
        """Run an idempotent SDK call with bounded retries."""
        for attempt in range(1, self.policy.attempts + 1):
            try:
                return fn()
            except cloudflare.CloudflareError as exc:
                if not _retryable(exc) or attempt == self.policy.attempts:
                    raise self._error(exc, action) from exc
                self._pause(exc, attempt, action)
        raise AssertionError("unreachable")  # the loop returns or raises

    @contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        try:
            yield
        except cloudflare.CloudflareError as exc:
            raise self._error(exc, action) from exc

    # -- zones and records -------------------------------------------------------

    def zone_id(self, zone: str) -> str:
        """The id of ``zone``; InputError when the token sees no such zone."""
        action = f"look up zone {zone}"
        zones = self._call(action, lambda: self._sdk.zones.list(name=zone, per_page=5).result)
        for found in zones:
            if found.name == zone:
                return found.id
        raise InputError(f"no zone {zone} visible to this token; check the zone name and token")

    def list_records(self, zone_id: str, *, name: str, type: str = "") -> list[DnsRecord]:
        """Every record of ``name`` (and ``type``), all pages; ``name`` "": of the zone."""
        action = f"list DNS records of {name or 'the zone'}"
        found: list[DnsRecord] = []
        # Pages one by one, each with retries: the SDK's iterator would fail the
        # whole listing on a 5xx at page 7. Bounded even if a server never ends.
        for page in range(1, 10_000):
            kwargs: dict[str, Any] = {"page": page, "per_page": PER_PAGE}
            if name:
                kwargs["name"] = {"exact": name}
            if type:
                kwargs["type"] = type

            def fetch(kwargs: dict[str, Any] = kwargs) -> Any:
                return self._sdk.dns.records.list(zone_id=zone_id, **kwargs)

            batch = self._call(action, fetch)
            items = list(batch.result or [])
            found.extend(_record(r) for r in items)
            info = batch.result_info
            total_pages = getattr(info, "total_pages", None) if info else None
            if not items or (isinstance(total_pages, int) and page >= total_pages):
                break
        return found

    def get_record(self, zone_id: str, record_id: str) -> DnsRecord | None:
        try:
            got = self._call(
                f"read DNS record {record_id}",
                lambda: self._sdk.dns.records.get(record_id, zone_id=zone_id),
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return _record(got) if got else None

    def create_record(self, zone_id: str, spec: RecordSpec) -> DnsRecord:
        """Create ``spec``, at most once: after a failed try, look before trying again."""
        action = f"create {spec.type} record {spec.name}"
        for attempt in range(1, self.policy.attempts + 1):
            try:
                created = self._sdk.dns.records.create(zone_id=zone_id, **_body(spec))
                if created is None:
                    raise ApiError(f"{action}: the API returned no record")
                return _record(created)
            except cloudflare.CloudflareError as exc:
                identical = any(c == IDENTICAL_RECORD for c, _ in _api_codes(exc))
                if not identical and (not _retryable(exc) or attempt == self.policy.attempts):
                    raise self._error(exc, action) from exc
                if not identical:
                    # Wait first: a slow server may still be writing the record.
                    self._pause(exc, attempt, action)
                existing = self._find(zone_id, spec)
                if existing:
                    log.info("%s: the record exists after all (id %s)", action, existing.id)
                    return existing
                if identical:
                    raise self._error(exc, action) from exc
        raise AssertionError("unreachable")

    def _find(self, zone_id: str, spec: RecordSpec) -> DnsRecord | None:
        for record in self.list_records(zone_id, name=spec.name, type=spec.type):
            if same_content(spec.type, record.content, spec.content):
                return record
        return None

    def update_record(self, zone_id: str, record_id: str, spec: RecordSpec) -> DnsRecord:
        """Replace the record (PUT): idempotent, so retried."""
        updated = self._call(
            f"update {spec.type} record {spec.name}",
            lambda: self._sdk.dns.records.update(record_id, zone_id=zone_id, **_body(spec)),
        )
        if updated is None:
            raise ApiError(f"update {spec.type} record {spec.name}: the API returned no record")
        return _record(updated)

    def delete_record(self, zone_id: str, record: DnsRecord) -> None:
        """Delete; a record already gone (e.g. a retried delete) counts as deleted."""
        try:
            self._call(
                f"delete {record.type} record {record.name}",
                lambda: self._sdk.dns.records.delete(record.id, zone_id=zone_id),
            )
        except ApiError as exc:
            if exc.status != 404:
                raise


def _body(spec: RecordSpec) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": spec.name,
        "type": spec.type,
        "content": spec.content,
        "ttl": spec.ttl,
        "proxied": spec.proxied,
    }
    if spec.comment:
        body["comment"] = spec.comment
    return body


def _record(raw: Any) -> DnsRecord:
    return DnsRecord(
        id=str(raw.id),
        name=str(raw.name),
        type=str(raw.type),
        content=str(getattr(raw, "content", "") or ""),
        proxied=bool(getattr(raw, "proxied", False)),
        ttl=int(getattr(raw, "ttl", 1) or 1),
        comment=str(getattr(raw, "comment", "") or ""),
    )
