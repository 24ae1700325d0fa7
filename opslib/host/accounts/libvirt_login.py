"""``LIBVIRT_DEFAULT_URI`` in an account's login file: which file its login shell reads,
what the file leaves exported, and the file with this runbook's line (pure).

Per account, in the file its login shell reads (``~/.profile``; bash reads
``~/.bash_profile`` or ``~/.bash_login`` instead when there is one; zsh ``~/.zprofile``);
shells outside the sh family (csh, fish) have their own syntax and get no file.
"""

from __future__ import annotations

import os
import re
import shlex

__all__ = [
    "LOGIN_FILES",
    "MARK",
    "VARIABLE",
    "exported_uri",
    "login_file",
    "uri_line",
    "with_uri",
]

VARIABLE = "LIBVIRT_DEFAULT_URI"
MARK = "# opsbook libvirt-access: virsh and virt-manager manage the system libvirt"
# Login shells of the sh family and the login file each reads (bash: the first that exists).
_BASH_FILES = (".bash_profile", ".bash_login", ".profile")
_ZSH_FILES = (".zprofile",)
_SH_SHELLS = ("sh", "dash", "ksh", "ksh93", "mksh", "posh", "yash")
_ASSIGN = re.compile(rf"^\s*(export\s+)?{VARIABLE}=(.*)$")
_EXPORT = re.compile(rf"^\s*export\s+(?:[A-Za-z_][A-Za-z0-9_]*\s+)*{VARIABLE}\s*(?:[;#].*)?$")
_UNSET = re.compile(rf"^\s*unset\s+(?:.*\s)?{VARIABLE}\b")
# Every login file a shell of the sh family may read, looked for in the home.
LOGIN_FILES = (*_BASH_FILES, *_ZSH_FILES)


def login_file(shell: str, existing: tuple[str, ...] | set[str]) -> str | None:
    """The file in the home that the login shell reads, None for a shell outside the sh
    family (csh, fish: their own syntax)."""
    name = os.path.basename(shell)
    if name == "bash":
        return next((f for f in _BASH_FILES if f in existing), ".profile")
    if name == "zsh":
        return ".zprofile"
    if name in _SH_SHELLS:
        return ".profile"
    return None


def uri_line(uri: str) -> str:
    return f"export {VARIABLE}={shlex.quote(uri)}"


def exported_uri(text: str | None) -> str | None:
    """The value the login file leaves exported in ``LIBVIRT_DEFAULT_URI`` (the last
    assignment, exported on its line or by an ``export`` line), None when it does not."""
    value, exported = None, False
    for line in (text or "").splitlines():
        if line.lstrip().startswith("#"):
            continue
        m = _ASSIGN.match(line)
        if m:
            try:
                words = shlex.split(m.group(2), comments=True)
            except ValueError:
                words = []
            value = words[0] if words else ""
            exported = exported or bool(m.group(1))
        elif _EXPORT.match(line):
            exported = True
        elif _UNSET.match(line):
            value, exported = None, False
    return value if exported else None


def with_uri(text: str | None, uri: str) -> str:
    """The login file with the variable set: this runbook's line replaced when it is there,
    else appended at the end (after every earlier setting: the last one counts)."""
    lines = (text or "").splitlines(keepends=True)
    for i, line in enumerate(lines[:-1]):
        if line.rstrip("\n") == MARK and _ASSIGN.match(lines[i + 1]):
            lines[i + 1] = uri_line(uri) + "\n"
            return "".join(lines)
    head = "".join(lines)
    if head and not head.endswith("\n"):
        head += "\n"
    return f"{head}{chr(10) if head else ''}{MARK}\n{uri_line(uri)}\n"
