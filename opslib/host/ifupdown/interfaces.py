"""``/etc/network/interfaces``: parse into stanzas, edit, render byte for byte.

The model keeps every physical line as it was read, so an unchanged file renders
to the same bytes and an edit rewrites only the lines it must. A file is a tuple
of :class:`Stanza`; a stanza is a tuple of :class:`Line` (one *logical* line
each: continuation lines ending in ``\\`` stay joined to their first line, as
ifupdown reads them). Comments and blank lines are stanzas of their own, except
when they sit between the option lines of an ``iface``/``mapping`` stanza:
ifupdown keeps reading options after them, and so does this model.

``parse`` refuses what ifupdown 0.8 refuses to read (a malformed ``iface`` line, an
option with an empty value, an option outside a stanza) with one line naming the file
and line, as ifupdown does; ifupdown then ignores the rest of a sourced file and refuses
a main file, the model refuses both. A :class:`Tree` reads the files in ifupdown's order
(sourced files in place of their ``source`` line) and resolves ``inherits`` (:mod:`.source_tree`).

This module is the model and its parser, pure; beside it: :mod:`.edits` (the pure edits),
:mod:`.source_tree` (``source`` / ``source-directory`` followed, ``inherits`` resolved:
``load_tree``, ``tree_from_texts``, ``flatten``) and :mod:`.file_io` (``write_atomic``,
``read_exact``, ``backup``, ``restore``, ``put_back``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace

from opslib.core.errors import InputError

# Words that open a stanza (interfaces(5)); anything else inside an iface or
# mapping stanza is one of its options.
STANZA_WORDS = frozenset(
    {"iface", "mapping", "auto", "source", "source-directory", "no-auto-down", "no-scripts",
     "rename"}
)  # fmt: skip
# ifupdown 0.8's address families and their methods (compiled into it): every method
# interfaces(5) documents, plus meta's internal one; the tests read both the man page and
# ifquery. A method outside it makes ifupdown refuse the file.
METHODS = {
    "inet": frozenset({"loopback", "static", "manual", "dhcp", "bootp", "tunnel", "ppp",
                       "wvdial", "ipv4ll"}),
    "inet6": frozenset({"auto", "loopback", "static", "manual", "dhcp", "tunnel", "v4tunnel",
                        "6to4"}),
    "ipx": frozenset({"static", "dynamic"}),
    "can": frozenset({"static"}),
    "meta": frozenset({"none"}),
}  # fmt: skip


@dataclass(frozen=True)
class Line:
    """One logical line: its exact text (all physical lines, newlines included)."""

    raw: str

    @property
    def text(self) -> str:
        """The line as ifupdown reads it: continuations joined, outer whitespace stripped.

        Like ifupdown, a physical line continues only when ``\\`` is its last
        character (not before a space or a CR); the backslash itself is dropped.
        """
        if self.is_comment:
            return self.raw.strip()
        physical = self.raw[:-1] if self.raw.endswith("\n") else self.raw
        parts = physical.split("\n")
        joined = "".join(p[:-1] if p.endswith("\\") else p for p in parts[:-1])
        last = parts[-1][:-1] if parts[-1].endswith("\\") else parts[-1]  # "\\" at EOF
        return (joined + last).strip()

    @property
    def words(self) -> list[str]:
        return self.text.split()

    @property
    def key_value(self) -> tuple[str, str]:
        """An option line as (key, value): split at the first run of blanks, like ifupdown."""
        key, *value = self.text.split(None, 1)
        return key, value[0] if value else ""

    @property
    def is_blank(self) -> bool:
        return not self.raw.strip()

    @property
    def is_comment(self) -> bool:
        return self.raw.lstrip().startswith("#")

    @property
    def indent(self) -> str:
        return self.raw[: len(self.raw) - len(self.raw.lstrip(" \t"))]

    @property
    def newline(self) -> str:
        return "\n" if self.raw.endswith("\n") else ""


@dataclass(frozen=True)
class Stanza:
    """A stanza, or a run of one comment / blank line outside stanzas."""

    lines: tuple[Line, ...]
    lineno: int = 0  # first line in the file it was read from (0: made by an edit)

    @property
    def raw(self) -> str:
        return "".join(line.raw for line in self.lines)

    @property
    def head(self) -> list[str]:
        return self.lines[0].words

    @property
    def kind(self) -> str:
        """iface, mapping, auto, allow, source, source-directory, comment, blank, other."""
        first = self.lines[0]
        if first.is_blank:
            return "blank"
        if first.is_comment:
            return "comment"
        word = first.words[0]
        if _is_allow(word):
            return "allow"
        if word == "source-dir":  # ifupdown's own alias
            return "source-directory"
        return word if word in STANZA_WORDS else "other"

    # -- iface stanzas -----------------------------------------------------
    @property
    def name(self) -> str:
        words = self.head
        if self.kind in ("iface", "source", "source-directory") and len(words) > 1:
            return words[1]
        return ""

    @property
    def _iface_words(self) -> tuple[str, str, str]:
        """(family, method, inherits) as written; "" where the line leaves it to a template."""
        if self.kind != "iface":
            return "", "", ""
        w = [*self.head[2:], "", "", ""]
        if w[0] == "inherits":  # iface NAME inherits TEMPLATE
            return "", "", w[1]
        if w[0] not in METHODS:
            return "", "", ""
        if w[1] == "inherits":  # iface NAME FAMILY inherits TEMPLATE
            return w[0], "", w[2]
        if w[1] not in METHODS[w[0]]:
            return w[0], "", ""
        return w[0], w[1], w[3] if w[2] == "inherits" else ""

    @property
    def family(self) -> str:
        """The address family written on the line ("" when it comes from ``inherits``)."""
        return self._iface_words[0]

    @property
    def method(self) -> str:
        """The method written on the line ("" when it comes from ``inherits``)."""
        return self._iface_words[1]

    @property
    def inherits(self) -> str:
        """The template an ``inherits`` keyword names (ifupdown 0.8), or ""."""
        return self._iface_words[2]

    def line_number(self, index: int) -> int:
        """The file line where ``lines[index]`` starts (stanzas read from a file)."""
        return self.lineno + sum(line.raw.count("\n") for line in self.lines[:index])

    @property
    def option_lines(self) -> list[tuple[int, Line]]:
        return [
            (i, line)
            for i, line in enumerate(self.lines[1:], 1)
            if not line.is_blank and not line.is_comment
        ]

    @property
    def options(self) -> list[tuple[str, str]]:
        """(key, value) of every option line, in file order (keys repeat, e.g. ``up``)."""
        found = []
        for _i, line in self.option_lines:
            found.append(line.key_value)
        return found

    def option(self, key: str) -> str | None:
        """The first value of ``key`` (``bridge-ports`` and ``bridge_ports`` are one key)."""
        wanted = option_key(key)
        return next((v for k, v in self.options if option_key(k) == wanted), None)

    @property
    def classes(self) -> tuple[str, list[str]]:
        """For auto/allow lines: (class, interface names); ``auto`` is class ``auto``."""
        words = self.head
        cls = "auto" if words[0] in ("auto", "allow-auto") else words[0][len("allow-") :]
        return cls, words[1:]


@dataclass(frozen=True)
class Interfaces:
    """One interfaces file as stanzas; ``render()`` gives its exact text back."""

    path: str
    stanzas: tuple[Stanza, ...]

    def render(self) -> str:
        return "".join(s.raw for s in self.stanzas)

    def ifaces(self, name: str | None = None) -> list[tuple[int, Stanza]]:
        return [
            (i, s)
            for i, s in enumerate(self.stanzas)
            if s.kind == "iface" and (name is None or s.name == name)
        ]

    @property
    def indent(self) -> str:
        """The indentation this file uses for options (a tab, as the wiki, if none)."""
        for s in self.stanzas:
            for _i, line in s.option_lines:
                if line.indent:
                    return line.indent
        return "\t"

    @property
    def newline_terminated(self) -> bool:
        text = self.render()
        return not text or text.endswith("\n")


# -- parsing -------------------------------------------------------------------


def _logical_lines(text: str) -> Iterator[Line]:
    physical = re.findall(r"[^\n]*\n|[^\n]+$", text)
    i = 0
    while i < len(physical):
        start = i
        # A comment never continues (verified with ifquery); other lines do when "\"
        # is the last character before the newline (not "\ " nor "\\r": ifupdown's get_line).
        if not physical[i].lstrip().startswith("#"):
            while physical[i].removesuffix("\n").endswith("\\") and i + 1 < len(physical):
                i += 1
        yield Line("".join(physical[start : i + 1]))
        i += 1


def parse(text: str, path: str = "") -> Interfaces:
    """Split ``text`` into stanzas; ``render()`` of the result is ``text`` again."""
    stanzas: list[Stanza] = []
    current: list[Line] = []
    in_block = False  # inside an iface / mapping stanza: non-stanza lines are options

    def close() -> None:
        nonlocal current
        if not current:
            return
        # Comments and blanks after the last option belong to what follows.
        tail: list[Line] = []
        while len(current) > 1 and (current[-1].is_blank or current[-1].is_comment):
            tail.insert(0, current.pop())
        stanzas.append(Stanza(tuple(current)))
        stanzas.extend(Stanza((line,)) for line in tail)
        current = []

    for line in _logical_lines(text):
        word = "" if line.is_blank or line.is_comment else line.words[0]
        if word in STANZA_WORDS or _is_allow(word) or word == "source-dir":
            close()
            current = [line]
            in_block = word in ("iface", "mapping")
            if not in_block:
                close()
        elif in_block:
            current.append(line)
        else:
            stanzas.append(Stanza((line,)))
    close()
    numbered, lineno = [], 1
    for s in stanzas:
        numbered.append(replace(s, lineno=lineno))
        lineno += s.raw.count("\n")
    model = Interfaces(path, tuple(numbered))
    for stanza in model.stanzas:
        _check(stanza, path)
    return model


def _is_allow(word: str) -> bool:
    return word.startswith("allow-") and len(word) > len("allow-")


def _iface_line_problem(words: list[str]) -> str:
    """What ifupdown 0.8 says about an ``iface`` line it refuses ("" when it reads it)."""
    w = [*words[1:], "", "", "", "", ""]
    missing = "'inherits' keyword is missing a parameter; name the iface to inherit from"
    if len(words) < 2:
        return "too few parameters for iface line; write 'iface NAME inet METHOD'"
    if w[1] == "inherits":
        return missing if not w[2] else ""
    if w[1] not in METHODS:
        return (
            "unknown or no address type and no inherits keyword specified; write "
            f"'iface {w[0]} FAMILY METHOD' with FAMILY one of {', '.join(METHODS)}"
        )
    if w[2] == "inherits":
        return missing if not w[3] else ""
    if w[2] not in METHODS[w[1]]:
        return (
            f"unknown or no method and no inherits keyword specified; {w[1]} methods are "
            + ", ".join(sorted(METHODS[w[1]]))
        )
    return missing if w[3] == "inherits" and not w[4] else ""


def _check(stanza: Stanza, path: str) -> None:
    """InputError for what ifupdown refuses to read, naming FILE:LINE like ifupdown."""
    where = path or "(text)"
    kind = stanza.kind
    if kind == "other":
        raise InputError(
            f"{where}:{stanza.lineno}: misplaced option {stanza.lines[0].text!r}: it belongs "
            "to no iface or mapping stanza; move it under one or remove it"
        )
    if kind == "iface":
        problem = _iface_line_problem(stanza.head)
        if problem:
            raise InputError(f"{where}:{stanza.lineno}: {problem}")
    if kind not in ("iface", "mapping"):
        return
    scripts = 0
    for i, line in stanza.option_lines:
        key, value = line.key_value
        at = f"{where}:{stanza.line_number(i)}"
        if kind == "mapping":
            scripts += key == "script"
            if key not in ("script", "map"):
                raise InputError(
                    f"{at}: misplaced option {key!r} in a mapping stanza; it takes only "
                    "script and map lines"
                )
            if scripts > 1:
                raise InputError(f"{at}: duplicate script in mapping; keep one script line")
        elif not value.strip():
            raise InputError(
                f"{at}: option with empty value ({key!r}); give it a value or remove it"
            )


def option_key(key: str) -> str:
    """ifupdown passes options as IF_KEY variables: ``bridge-ports`` is ``bridge_ports``."""
    return key.replace("-", "_").lower()


def render(model: Interfaces) -> str:
    return model.render()
