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
(sourced files in place of their ``source`` line) and resolves ``inherits``.

Pure functions (``parse``, ``render``, the edits) are separate from the file
system ones (``load_tree``, ``write_atomic``, ``backup``).
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import glob
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

from opslib.core import files
from opslib.core.errors import ApplyError, InputError

# Words that open a stanza (interfaces(5)); anything else inside an iface or
# mapping stanza is one of its options.
STANZA_WORDS = frozenset(
    {"iface", "mapping", "auto", "source", "source-directory", "no-auto-down", "no-scripts",
     "rename"}
)  # fmt: skip
SOURCE_DIRECTORY_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")
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


def render(model: Interfaces) -> str:
    return model.render()


# -- edits (pure: a new Interfaces, only the touched stanzas differ) ----------


def _option_line(indent: str, key: str, value: str) -> Line:
    return Line(f"{indent}{key} {value}\n" if value else f"{indent}{key}\n")


def iface_stanza(
    name: str, family: str, method: str, options: Iterable[tuple[str, str]], indent: str = "\t"
) -> Stanza:
    lines = [Line(f"iface {name} {family} {method}\n")]
    lines += [_option_line(indent, k, v) for k, v in options]
    return Stanza(tuple(lines))


def set_head(stanza: Stanza, words: list[str]) -> Stanza:
    """Replace the first line's words, keeping its indentation and newline."""
    first = stanza.lines[0]
    if first.words == words:
        return stanza
    return replace(stanza, lines=(Line(first.indent + " ".join(words) + "\n"), *stanza.lines[1:]))


def option_key(key: str) -> str:
    """ifupdown passes options as IF_KEY variables: ``bridge-ports`` is ``bridge_ports``."""
    return key.replace("-", "_").lower()


def remove_options(stanza: Stanza, keys: Callable[[str], bool]) -> Stanza:
    """Drop the option lines whose normalised key ``keys`` accepts."""
    keep = [stanza.lines[0]]
    for line in stanza.lines[1:]:
        if not line.is_blank and not line.is_comment and keys(option_key(line.words[0])):
            continue
        keep.append(line)
    return replace(stanza, lines=tuple(keep))


def set_option(stanza: Stanza, key: str, value: str, indent: str = "\t") -> Stanza:
    """Set the first ``key`` line to ``value`` (others of that key are dropped), or append.

    An existing line keeps its spelling of the key (``bridge-stp`` stays so).
    """
    lines = list(stanza.lines)
    found = [i for i, line in stanza.option_lines if option_key(line.words[0]) == option_key(key)]
    if found:
        first = found[0]
        current = lines[first]
        if current.key_value[1] != value or len(found) > 1:
            lines[first] = _option_line(current.indent, current.words[0], value)
        for i in reversed(found[1:]):
            del lines[i]
        return replace(stanza, lines=tuple(lines))
    options = stanza.option_lines
    at = options[-1][0] + 1 if options else 1
    use_indent = options[-1][1].indent if options else indent
    lines.insert(at, _option_line(use_indent or indent, key, value))
    return replace(stanza, lines=tuple(lines))


def prepend_options(stanza: Stanza, options: Iterable[tuple[str, str]], indent: str) -> Stanza:
    """Insert option lines right under the first line (indented like the stanza's own)."""
    existing = stanza.option_lines
    use = (existing[0][1].indent if existing else "") or indent
    added = tuple(_option_line(use, k, v) for k, v in options)
    return replace(stanza, lines=(stanza.lines[0], *added, *stanza.lines[1:]))


def with_stanzas(model: Interfaces, stanzas: Iterable[Stanza]) -> Interfaces:
    return replace(model, stanzas=tuple(stanzas))


def ensure_final_newline(model: Interfaces) -> Interfaces:
    """A file must end in a newline before a stanza is appended after it."""
    if model.newline_terminated or not model.stanzas:
        return model
    last = model.stanzas[-1]
    fixed = replace(last, lines=(*last.lines[:-1], Line(last.lines[-1].raw + "\n")))
    return with_stanzas(model, (*model.stanzas[:-1], fixed))


# -- following source / source-directory ---------------------------------------


@dataclass(frozen=True)
class Iface:
    """An iface stanza as ifupdown reads it: family, method and options after ``inherits``.

    ``iface eth0 inet static inherits base`` copies the options of the first ``base``
    stanza of family inet read before it (any family when the line names none, which
    then comes from the template, as does a missing method); its own options follow.
    """

    path: str
    index: int
    stanza: Stanza
    family: str
    method: str
    inherited: tuple[tuple[str, str], ...] = ()  # the template's options, read first
    template: tuple[str, int] | None = None  # (path, index) of the stanza inherited from

    @property
    def name(self) -> str:
        return self.stanza.name

    @property
    def options(self) -> list[tuple[str, str]]:
        return [*self.inherited, *self.stanza.options]

    def option(self, key: str) -> str | None:
        wanted = option_key(key)
        return next((v for k, v in self.options if option_key(k) == wanted), None)


@dataclass(frozen=True)
class Tree:
    """The main file and every file it sources, in the order ifupdown reads them."""

    main: str
    files: dict[str, Interfaces]  # path -> model, in reading order
    _cache: dict[str, list] = field(default_factory=dict, compare=False, repr=False)

    def find_ifaces(self, name: str) -> list[tuple[str, int, Stanza]]:
        """The iface stanzas of ``name``, in reading order."""
        return [(f.path, f.index, f.stanza) for f in self.ifaces(name)]

    def stanzas(self) -> Iterator[tuple[str, int, Stanza]]:
        for path, model in self.files.items():
            for i, s in enumerate(model.stanzas):
                yield path, i, s

    def in_order(self) -> list[tuple[str, int, Stanza]]:
        """Every stanza as ifupdown reads it: a sourced file in place of its source line."""
        if "order" not in self._cache:
            exists = _globber(self.files)
            order: list[tuple[str, int, Stanza]] = []
            seen: set[str] = set()

            def read(path: str) -> None:
                seen.add(path)
                model = self.files[path]
                for i, s in enumerate(model.stanzas):
                    if s.kind in ("source", "source-directory"):
                        for child in sourced_paths(Interfaces(model.path, (s,)), exists):
                            if child in self.files and child not in seen:
                                read(child)
                    else:
                        order.append((path, i, s))

            read(self.main)
            self._cache["order"] = order
        return list(self._cache["order"])

    def ifaces(self, name: str | None = None) -> list[Iface]:
        """The iface stanzas (of ``name``), resolved, in reading order.

        Raises InputError for an ``inherits`` that names no iface read before it.
        """
        if "ifaces" not in self._cache:
            resolved: list[Iface] = []
            for path, i, s in self.in_order():
                if s.kind != "iface":
                    continue
                family, method, parent = s.family, s.method, s.inherits
                if not parent:
                    resolved.append(Iface(path, i, s, family, method))
                    continue
                candidates = (b for b in resolved if b.name == parent)
                base = next((b for b in candidates if not family or b.family == family), None)
                if base is None:
                    raise InputError(
                        f"{path}:{s.lineno}: unknown iface to inherit from: {parent} "
                        f"({family or '*'}); define 'iface {parent} {family or 'inet'} ...' "
                        "before this line"
                    )
                resolved.append(
                    Iface(path, i, s, family or base.family, method or base.method,
                          tuple(base.options), (base.path, base.index))
                )  # fmt: skip
            self._cache["ifaces"] = resolved
        found: list[Iface] = self._cache["ifaces"]
        return [f for f in found if name is None or f.name == name]

    def iface(self, path: str, index: int) -> Iface:
        return next(f for f in self.ifaces() if (f.path, f.index) == (path, index))

    def classes(self) -> dict[str, list[str]]:
        """auto / allow-CLASS -> interface names, in reading order, each once (as ifquery
        --list --allow=CLASS prints them; ifupdown also adds ``lo`` to auto by itself)."""
        found: dict[str, list[str]] = {}
        for _p, _i, s in self.in_order():
            if s.kind in ("auto", "allow"):
                cls, names = s.classes
                members = found.setdefault(cls, [])
                members += [n for n in names if n not in members]
        return found


def sourced_paths(model: Interfaces, exists: Callable[[str], list[str]]) -> list[str]:
    """The files a model's source / source-directory lines name, resolved like ifupdown.

    ``exists(pattern)`` expands a glob into sorted existing paths (injected: the
    pure tests pass a dictionary's keys, ``load_tree`` the file system).
    """
    base = os.path.dirname(model.path) or "."
    found: list[str] = []
    for s in model.stanzas:
        if s.kind not in ("source", "source-directory") or len(s.head) < 2:
            continue
        pattern = s.head[1]
        if not pattern.startswith("/"):
            pattern = os.path.join(base, pattern)
        if s.kind == "source":
            found += [p for p in exists(pattern) if not p.endswith("/")]
        else:
            for directory in exists(pattern):
                entries = exists(os.path.join(glob.escape(directory), "*"))
                found += [p for p in entries if SOURCE_DIRECTORY_NAME.match(os.path.basename(p))]
    return found


def _glob(pattern: str) -> list[str]:
    return sorted(p for p in glob.glob(pattern) if os.path.exists(p))


def load_tree(path: str, read: Callable[[str], str] | None = None) -> Tree:
    """Read ``path`` and, depth first, every file it sources (each once)."""

    def read_file(p: str) -> str:
        try:
            with open(p, encoding="utf-8", newline="") as f:
                return f.read()
        except FileNotFoundError as exc:
            raise InputError(
                f"no interfaces file at {p}; check the interfaces_file parameter"
            ) from exc
        except OSError as exc:
            raise InputError(f"cannot read {p}: {exc.strerror}") from exc

    reader = read or read_file
    files: dict[str, Interfaces] = {}

    def visit(p: str) -> None:
        if p in files:
            return
        files[p] = parse(reader(p), p)
        for child in sourced_paths(files[p], _glob):
            if os.path.isfile(child):
                visit(child)

    visit(path)
    return _resolved(Tree(path, files))


def _globber(paths: Iterable[str]) -> Callable[[str], list[str]]:
    """A glob over known paths: a directory "exists" when a known file lives in it."""
    known = sorted(paths)

    def exists(pattern: str) -> list[str]:
        hits = {p for p in known if fnmatch.fnmatchcase(p, pattern)}
        hits |= {
            os.path.dirname(p) for p in known if fnmatch.fnmatchcase(os.path.dirname(p), pattern)
        }
        return sorted(hits)

    return exists


def tree_from_texts(main: str, texts: dict[str, str]) -> Tree:
    """A Tree from path -> text, resolving sources against the dictionary (pure)."""
    exists = _globber(texts)
    files: dict[str, Interfaces] = {}

    def visit(p: str) -> None:
        if p in files or p not in texts:
            return
        files[p] = parse(texts[p], p)
        for child in sourced_paths(files[p], exists):
            visit(child)

    visit(main)
    return _resolved(Tree(main, files))


def _resolved(tree: Tree) -> Tree:
    tree.ifaces()  # InputError now, before anyone plans from a file ifupdown refuses
    return tree


def flatten(tree: Tree) -> str:
    """One self-contained file: every source line replaced by the text it sources.

    Used to hand ifdown the configuration being left as a single file, even when
    the files it sourced have already been rewritten on disk.
    """
    exists = _globber(tree.files)

    def expand(path: str, seen: tuple[str, ...]) -> str:
        model = tree.files[path]
        out = []
        for s in model.stanzas:
            if s.kind in ("source", "source-directory"):
                one = Interfaces(model.path, (s,))
                for child in sourced_paths(one, exists):
                    if child in tree.files and child not in seen:
                        text = expand(child, (*seen, child))
                        out.append(text if text.endswith("\n") or not text else text + "\n")
                out.append(f"# ({s.lines[0].text} expanded above)\n")
            else:
                out.append(s.raw)
        return "".join(out)

    text = expand(tree.main, (tree.main,))
    return text if text.endswith("\n") else text + "\n"


def with_iface(
    text: str, path: str, name: str, family: str, method: str, options: list[tuple[str, str]]
) -> str:
    """The file with ``auto NAME`` and ``iface NAME FAMILY METHOD`` holding ``options``: the
    stanza edited in place (or appended), everything else kept byte for byte."""
    model = parse(text, path)
    found = [(i, s) for i, s in model.ifaces(name) if s.family == family]
    stanzas = list(model.stanzas)
    if found:
        index, stanza = found[0]
        stanza = set_head(stanza, ["iface", name, family, method])
        for key, value in options:
            stanza = set_option(stanza, key, value, model.indent)
        stanzas[index] = stanza
    else:
        model = ensure_final_newline(model)
        stanzas = list(model.stanzas)
        if stanzas and stanzas[-1].kind != "blank":
            stanzas.append(Stanza((Line("\n"),)))
        stanzas.append(iface_stanza(name, family, method, options, model.indent))
    auto = any(
        s.kind in ("auto", "allow") and s.classes[0] == "auto" and name in s.classes[1]
        for s in stanzas
    )
    if not auto:
        at = found[0][0] if found else len(stanzas) - 1
        stanzas.insert(at, Stanza((Line(f"auto {name}\n"),)))
    return with_stanzas(model, stanzas).render()


# -- writing -------------------------------------------------------------------


def write_atomic(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` atomically, keeping its mode and owner."""
    try:
        files.atomic_write(path, text)
    except OSError as exc:
        raise ApplyError(f"cannot write {path}: {exc.strerror}") from exc


def read_exact(path: str) -> str | None:
    """The file as it is, line ends included (CRLF stays CRLF); None when it is absent."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc


def put_back(path: str, text: str | None) -> str:
    """The file as :func:`read_exact` found it, byte for byte (removed when there was none);
    what it did (:func:`opslib.core.files.restore_as_observed`)."""
    return files.restore_as_observed(path, text, write=lambda old: write_atomic(path, old))


def restore(path: str, copy: str) -> None:
    """Put a backup back, byte for byte (CRLF kept), atomically, keeping mode and owner."""
    with open(copy, encoding="utf-8", newline="") as f:
        write_atomic(path, f.read())


def backup(path: str, directory: str = "", *, now: _dt.datetime | None = None) -> str:
    """Copy ``path`` to ``DIR/NAME.opsbook-YYYYmmddTHHMMSSZ`` (kept); returns the copy's path."""
    stamp = (now or _dt.datetime.now(_dt.UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    target_dir = directory or os.path.dirname(os.path.abspath(path))
    target = os.path.join(target_dir, f"{os.path.basename(path)}.opsbook-{stamp}")
    try:
        os.makedirs(target_dir, exist_ok=True)
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except OSError as exc:
        raise ApplyError(f"cannot back up {path}: {exc.strerror}") from exc
    write_atomic(target, text)
    st = os.stat(path)
    os.chmod(target, st.st_mode & 0o7777)
    return target
