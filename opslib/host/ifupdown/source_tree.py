"""The interfaces files as ifupdown reads them: the main file and, in place of each
``source`` / ``source-directory`` line, the files it names (depth first, each once), with
``inherits`` resolved (:class:`Iface`). ``load_tree`` reads the file system,
``tree_from_texts`` a dictionary (pure); ``flatten`` makes one self-contained file."""

from __future__ import annotations

import fnmatch
import glob
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from opslib.core.errors import InputError
from opslib.host.ifupdown.interfaces import Interfaces, Stanza, option_key, parse

SOURCE_DIRECTORY_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")


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
