"""The record store's clock: UTC to the second, as ISO text (what the index and the
headers hold), and ``--since`` bounds ('2024-05-01', '90m', '3d') made from it."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from opslib.core.errors import InputError


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_SINCE = re.compile(r"(\d+)\s*([mhdw])")


def parse_since(text: str, *, now: datetime | None = None) -> str:
    """An ISO UTC bound from '2024-05-01', '2024-05-01T10:00', '90m', '12h', '3d', '2w'."""
    now = now or utcnow()
    m = _SINCE.fullmatch(text.strip())
    if m:
        unit = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[m[2]]
        return iso(now - timedelta(**{unit: int(m[1])}))
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InputError(
            f"--since {text!r}: use a date (2024-05-01), a time (2024-05-01T10:00) or 3d/12h/90m"
        ) from None
    return iso(t if t.tzinfo else t.replace(tzinfo=UTC))
