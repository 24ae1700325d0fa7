"""Parameter sets: ``parameters/HOST/RUNBOOK.yaml``, one ``NAME: VALUE`` line per parameter.

Read by ``opsbook run -f`` (the runner) and by an interactive session's form
(``$OPSBOOK_DEFAULTS``); both convert each value by its declared type afterwards
(:mod:`opslib.params`). The format is in ``parameters/README.md``.
"""

from __future__ import annotations

from pathlib import Path

from opslib.errors import InputError

__all__ = ["load_param_file"]


def load_param_file(path: Path) -> dict[str, object]:
    """A parameter set (YAML mapping). Scalars are read as text, then converted by type:
    YAML's own guesses (``010`` as 8, ``no`` as False) never reach a parameter."""
    import yaml

    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.BaseLoader)
    except OSError as exc:
        raise InputError(f"{path}: cannot read parameter file: {exc.strerror}") from None
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
