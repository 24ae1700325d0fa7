"""Secret sources: a parameter names where a secret lives, never the secret.

``file:/path`` reads a file (one trailing newline dropped), ``env:NAME`` an
environment variable. Messages name the source, never the value. Every value
loaded in this process is remembered so that whoever writes a record can check
that none of them leaked into it (:func:`loaded`, :func:`scrub`), in any case and in
the forms a value takes on its way (URL-quoted, JSON-escaped): a token lowercased into
a DNS name is still the token.
"""

from __future__ import annotations

import functools
import json
import os
import re
import stat
import sys
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

from opslib.core.errors import SecretError
from opslib.core.shellcmd import command, word

__all__ = ["MIN_LENGTH", "REDACTED", "contains", "find_leaks", "load", "loaded", "scrub"]

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
                f"warning: secret file {word(rest)} is world-readable; "
                f"{command('chmod', 'o-r', rest)}",
                file=sys.stderr,
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


def _forms(secret: str) -> set[str]:
    # The forms a value takes on its way into a record: as read, lowercased (a DNS name
    # made from it), uppercased, URL-quoted (a query string, a path), each also as it
    # appears inside a JSON string (a notebook). Matched ignoring case on top of that.
    forms: set[str] = set()
    for base in {secret, secret.lower(), secret.upper()}:
        for form in (base, quote(base, safe=""), quote(base), quote_plus(base)):
            forms |= {form, json.dumps(form)[1:-1], json.dumps(form, ensure_ascii=False)[1:-1]}
    return forms


@functools.lru_cache(maxsize=32)
def _pattern(secrets: tuple[str, ...]) -> re.Pattern[str]:
    forms = set().union(*(_forms(s) for s in secrets))
    # Longest first: a form that holds another is replaced whole.
    alternatives = sorted(forms, key=lambda f: (-len(f), f))
    return re.compile("|".join(re.escape(f) for f in alternatives), re.IGNORECASE)


def _text(data: bytes) -> str:
    # Bytes that are not UTF-8 survive the round trip unchanged (surrogateescape).
    return data.decode("utf-8", "surrogateescape")


def find_leaks(data: bytes, secrets: Iterable[str]) -> int:
    """How many of ``secrets`` occur in ``data``, in any of the forms of :func:`_forms`."""
    text = _text(data)
    return sum(1 for s in set(secrets) if s and _pattern((s,)).search(text))


def contains(text: str, secrets: Iterable[str]) -> bool:
    """Whether ``text`` holds any of ``secrets`` (in any case, quoted or escaped)."""
    return find_leaks(text.encode("utf-8", "surrogateescape"), secrets) > 0


def scrub(data: bytes, secrets: Iterable[str]) -> bytes:
    """``data`` with every occurrence of every secret (in every form) replaced by REDACTED."""
    values = tuple(sorted({s for s in secrets if s}))
    if not values:
        return data
    text = _pattern(values).sub(REDACTED, _text(data))
    return text.encode("utf-8", "surrogateescape")
