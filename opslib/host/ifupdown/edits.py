"""Edits of an interfaces(5) model (pure): each returns a new stanza or
:class:`~opslib.host.ifupdown.interfaces.Interfaces` in which only the touched lines
differ, so the rest of the file renders byte for byte as it was read."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

from opslib.host.ifupdown.interfaces import Interfaces, Line, Stanza, option_key, parse


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


def with_option_line(
    text: str, path: str, name: str, family: str, line: tuple[str, str], *, present: bool
) -> str:
    """The file whose ``iface NAME FAMILY`` stanza holds the option line ``KEY VALUE`` once
    (``present``, appended after its options) or not at all; the stanza's other lines
    (other lines of KEY too) and the rest of the file byte for byte. Without such a stanza,
    the text as it is."""
    model = parse(text, path)
    found = [(i, s) for i, s in model.ifaces(name) if s.family == family]
    if not found:
        return text
    index, stanza = found[0]
    key, value = line
    same = [
        i
        for i, ln in stanza.option_lines
        if option_key(ln.key_value[0]) == option_key(key) and ln.key_value[1] == value
    ]
    if len(same) == (1 if present else 0):
        return text
    kept = [ln for i, ln in enumerate(stanza.lines) if i not in same]
    edited = replace(stanza, lines=tuple(kept))
    if present:
        options = edited.option_lines
        at = options[-1][0] + 1 if options else 1
        indent = (options[-1][1].indent if options else "") or model.indent
        if not kept[at - 1].newline:  # the file's last line, without its newline
            kept[at - 1] = Line(kept[at - 1].raw + "\n")
        kept.insert(at, _option_line(indent, key, value))
        edited = replace(stanza, lines=tuple(kept))
    stanzas = list(model.stanzas)
    stanzas[index] = edited
    return with_stanzas(model, stanzas).render()


def without_iface(text: str, path: str, name: str, family: str) -> str:
    """The file without the ``iface NAME FAMILY`` stanza (and the blank line before it);
    everything else byte for byte, ``auto NAME`` included unless no stanza of NAME is left."""
    model = parse(text, path)
    drop = {i for i, s in model.ifaces(name) if s.family == family}
    if not drop:
        return text
    stanzas = list(model.stanzas)
    for i in sorted(drop):
        if i > 0 and stanzas[i - 1].kind == "blank" and i - 1 not in drop:
            drop.add(i - 1)
    kept = [s for i, s in enumerate(stanzas) if i not in drop]
    if not any(s.kind == "iface" and s.name == name for s in kept):
        kept = [s for s in (_without_auto(s, name) for s in kept) if s is not None]
    return with_stanzas(model, kept).render()


def _without_auto(stanza: Stanza, name: str) -> Stanza | None:
    """An ``auto``/``allow-*`` line without ``name`` (None when nothing is left of it)."""
    if stanza.kind not in ("auto", "allow") or name not in stanza.classes[1]:
        return stanza
    words = [w for w in stanza.head if w != name]
    return set_head(stanza, words) if len(words) > 1 else None
