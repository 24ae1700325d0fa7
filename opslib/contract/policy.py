"""A host's apply policy: ``parameters/HOST/policy.yaml``.

::

    # runbooks whose applies need a saved plan approved by another person
    approval: [forward-bridge, nat-bridge-ipv6]
    # how long a saved plan can be applied after it was made (default 1d): 90m, 12h, 3d, 45s
    plan_expiry: 1d

Read by ``opsbook plan | approve | apply`` and by ``opsbook run`` (which refuses
``-p apply true`` for a runbook that needs an approval, naming the plan commands).
The file is looked up as ``PARAMS_DIR/HOST/policy.yaml`` (``--params-dir``, default
``./parameters``) and beside every parameter set a run is given (``-f``); all that
exist apply (a runbook named by any needs approval, the shortest expiry wins). No
file: no approval needed, plans expire after a day. Like every check opsbook makes as
root, it keeps people to the agreed workflow; it is not a boundary against root.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from opslib.core import shellcmd
from opslib.core.errors import InputError
from opslib.core.paramsets import StrictBaseLoader

__all__ = [
    "DEFAULT_EXPIRY",
    "FILE",
    "Policy",
    "find",
    "load",
    "parse_expiry",
    "refuse_unapproved_run",
]

FILE = "policy.yaml"
DEFAULT_EXPIRY = 86400  # a day
_SPAN = re.compile(r"(\d+)\s*([smhdw]?)")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_KEYS = ("approval", "plan_expiry")


@dataclass(frozen=True)
class Policy:
    approval: frozenset[str] = frozenset()  # runbooks whose applies need an approved plan
    expiry: int = DEFAULT_EXPIRY  # seconds a saved plan stays applicable
    sources: tuple[Path, ...] = ()  # the files it was read from

    def needs_approval(self, runbook: str) -> bool:
        return runbook in self.approval

    @property
    def where(self) -> str:
        return ", ".join(str(p) for p in self.sources) or "no policy file"


def parse_expiry(text: str, where: str) -> int:
    """Seconds from ``45s``, ``90m``, ``12h``, ``3d``, ``2w`` or a plain number of seconds."""
    m = _SPAN.fullmatch(text.strip())
    if not m or int(m[1]) == 0:
        raise InputError(f"{where}: plan_expiry {text!r}: give a time span like 12h, 1d or 90m")
    return int(m[1]) * _UNIT[m[2]]


def load(path: Path) -> Policy:
    """One policy file; InputError naming the file and what is wrong in it."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=StrictBaseLoader)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the policy: {exc.strerror}") from None
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark else ""
        raise InputError(f"{path}{at}: not a valid policy file (UTF-8 YAML mapping)") from None
    if data in (None, ""):
        return Policy(sources=(path,))
    if not isinstance(data, dict):
        raise InputError(f"{path}: a policy is a mapping with approval and plan_expiry")
    unknown = [k for k in data if k not in _KEYS]
    if unknown:
        raise InputError(f"{path}: unknown key {unknown[0]!r}; known: {', '.join(_KEYS)}")
    names = data.get("approval") or []
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise InputError(f"{path}: approval is a list of runbook names")
    expiry = data.get("plan_expiry")
    if expiry is not None and not isinstance(expiry, str):
        raise InputError(f"{path}: plan_expiry is one time span, like 1d")
    seconds = parse_expiry(expiry, str(path)) if expiry else DEFAULT_EXPIRY
    return Policy(frozenset(names), seconds, (path,))


def find(host: str, params_dir: Path | None = None, beside: Iterable[Path] = ()) -> Policy:
    """The policy of ``host``: every policy file that applies, merged (see the module)."""
    root = params_dir if params_dir is not None else Path("parameters")
    candidates = [root / host / FILE, *(Path(f).parent / FILE for f in beside)]
    found: list[Policy] = []
    seen: set[Path] = set()
    for path in candidates:
        key = path.resolve()
        if key in seen or not path.is_file():
            continue
        seen.add(key)
        found.append(load(path))
    if not found:
        return Policy()
    return Policy(
        frozenset().union(*(p.approval for p in found)),
        min(p.expiry for p in found),
        tuple(s for p in found for s in p.sources),
    )


def refuse_unapproved_run(policy: Policy, runbook: str, host: str) -> None:
    """``opsbook run RUNBOOK -p apply true`` where the policy asks for an approved plan:
    InputError naming the commands of the plan workflow instead."""
    if not policy.needs_approval(runbook):
        return
    plan = shellcmd.command("opsbook", "plan", runbook, "--host", host)
    raise InputError(
        f"{runbook} on {host} applies only an approved plan ({policy.where}); not with "
        f"-p apply true: file a plan with `{plan}` (same -f/-p), have another person "
        "run `opsbook approve ID`, then `opsbook apply ID`"
    )
