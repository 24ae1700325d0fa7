"""Secret sources: a parameter names where a secret lives, never the secret.

``file:/path`` reads a file (one trailing newline dropped), ``env:NAME`` an
environment variable. Messages name the source, never the value. Every value
loaded in this process is remembered so that whoever writes a record can check
that none of them leaked into it (:func:`loaded`, :func:`scrub`).
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterable

from opslib.errors import SecretError

__all__ = ["MIN_LENGTH", "REDACTED", "find_leaks", "load", "loaded", "scrub"]

MIN_LENGTH = 8  # shorter values would match all over a record: not a credential
REDACTED = "[secret redacted]"
_loaded: set[str] = set()


def load(source: str, *, warn: bool = True) -> str:
    """The secret named by ``source`` (``file:/path`` or ``env:NAME``)."""
    kind, sep, rest = source.partition(":")
    if not sep or kind not in ("file", "env") or not rest:
        raise SecretError("a secret source is file:/path or env:NAME")
    if kind == "env":
        value = os.environ.get(rest)
        if value is None:
            raise SecretError(f"secret source env:{rest}: the variable is not set; export it")
    else:
        try:
            st = os.stat(rest)
            with open(rest, encoding="utf-8") as fh:
                value = fh.read()
        except FileNotFoundError:
            raise SecretError(f"secret source file:{rest}: no such file") from None
        except PermissionError:
            raise SecretError(f"secret source file:{rest}: not readable by this user") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretError(
                f"secret source file:{rest}: cannot read ({type(exc).__name__})"
            ) from None
        if warn and st.st_mode & stat.S_IROTH:
            print(
                f"warning: secret file {rest} is world-readable; chmod o-r {rest}", file=sys.stderr
            )
        value = value.removesuffix("\n").removesuffix("\r")
    if len(value) < MIN_LENGTH:
        raise SecretError(
            f"secret source {source}: shorter than {MIN_LENGTH} characters; not a credential"
        )
    _loaded.add(value)
    return value


def loaded() -> frozenset[str]:
    """Every secret value loaded in this process so far."""
    return frozenset(_loaded)


def _forms(secret: str) -> list[bytes]:
    # As written raw, and as it appears inside a JSON string (a notebook).
    forms = {
        secret.encode(),
        json.dumps(secret)[1:-1].encode(),
        json.dumps(secret, ensure_ascii=False)[1:-1].encode(),
    }
    return sorted(forms, key=len, reverse=True)


def find_leaks(data: bytes, secrets: Iterable[str]) -> int:
    """How many of ``secrets`` occur in ``data``."""
    return sum(1 for s in secrets if any(f in data for f in _forms(s)))


def scrub(data: bytes, secrets: Iterable[str]) -> bytes:
    """``data`` with every occurrence of every secret replaced by REDACTED."""
    for s in secrets:
        for f in _forms(s):
            data = data.replace(f, REDACTED.encode())
    return data
