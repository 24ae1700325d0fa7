"""A fingerprint of what a runbook's observe saw: one sha256 per named part.

A saved plan (``opsbook plan``) carries it, and its apply observes again and compares
part by part, so a refusal names what moved ("forward-bridge's interfaces file
/etc/network/interfaces changed since plan #12"). The digests are of a canonical JSON
form of the observed values (dataclasses by field, mappings by sorted key), so the same
host state gives the same fingerprint in any process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["canonical", "digest", "fingerprint", "parts_of"]


def canonical(value: Any) -> Any:
    """``value`` as plain JSON data, the same for equal values whatever their order."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: canonical(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.compare  # caches and the like are not state
        }
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((canonical(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def digest(value: Any) -> str:
    """The sha256 of ``value``'s canonical JSON."""
    text = json.dumps(canonical(value), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def parts_of(observed: Any) -> dict[str, Any]:
    """The default parts of an observed state: a dataclass's fields by name (``_`` read
    as a space), else the whole as one part."""
    if dataclasses.is_dataclass(observed) and not isinstance(observed, type):
        return {
            f.name.replace("_", " "): getattr(observed, f.name)
            for f in dataclasses.fields(observed)
            if f.compare
        }
    return {"observed state": observed}


def fingerprint(parts: Mapping[str, Any]) -> dict[str, str]:
    """``{part: sha256}`` of the named parts."""
    return {name: digest(value) for name, value in parts.items()}
