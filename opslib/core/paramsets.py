"""Parameter sets: ``parameters/HOST/RUNBOOK.yaml``, one ``NAME: VALUE`` line per parameter.

Read by ``opsbook run -f`` (the runner) and by an interactive session's form
(``$OPSBOOK_DEFAULTS``); both convert each value by its declared type afterwards
(:mod:`opslib.core.params`). The format is in ``parameters/README.md``.

A key given twice in a mapping is refused, naming its line: YAML's own rule is that
the last one wins silently, so ``host: a`` ... ``host: b`` would run on b while the
file reads as a at a glance. :class:`StrictSafeLoader` applies the same rule to the
other YAML opsbook reads (schedule files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from opslib.core.errors import InputError

__all__ = ["StrictBaseLoader", "StrictSafeLoader", "load_param_file"]


def _check_unique(loader: yaml.BaseLoader | yaml.SafeLoader, node: yaml.MappingNode) -> None:
    first: dict[object, yaml.Mark] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue  # a list or mapping as a key: the types after the load refuse it
        key = loader.construct_object(key_node)
        try:
            seen = first.setdefault(key, key_node.start_mark)
        except TypeError:  # unhashable: not a key a set can hold
            continue
        if seen is not key_node.start_mark:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"{key} is given twice (first on line {seen.line + 1})",
                key_node.start_mark,
            )


class StrictBaseLoader(yaml.BaseLoader):
    """PyYAML's BaseLoader (every scalar text) refusing a key given twice in a mapping."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            _check_unique(self, node)
        return super().construct_mapping(node, deep=deep)


class StrictSafeLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader refusing a key given twice in a mapping."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            _check_unique(self, node)
        return super().construct_mapping(node, deep=deep)


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read parameter file: {exc.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}); "
            "save it as UTF-8"
        ) from None


def load_param_file(path: Path) -> dict[str, object]:
    """A parameter set (YAML mapping). Scalars are read as text, then converted by type:
    YAML's own guesses (``010`` as 8, ``no`` as False) never reach a parameter."""
    text = _read_text(path)
    try:
        data = yaml.load(text, Loader=StrictBaseLoader)
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        where = f" line {mark.line + 1}" if mark else ""
        raise InputError(f"{path}{where}: {exc.problem}; keep one") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise InputError(f"{path}{where}: not valid YAML") from None
    if data is None or data == "":
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: a parameter file is a mapping of NAME: VALUE lines")
    for key, value in data.items():
        if not isinstance(value, str):
            raise InputError(f"{path}: {key}: give a single value, not a list or mapping")
    return dict(data)
