"""Commands opsbook suggests (a check's fix, a plan's note, an error's hint).

An operator pastes them into a root shell. A network, VM, account or file name comes
from libvirt, /etc/passwd or a parameter and may hold ``;``, ``$(...)``, a quote or a
space: inserted as it is, ``virsh net-autostart lab;touch pwned`` runs a second
command. Every suggested command is built here from its arguments, each one quoted
(:func:`shlex.join`), so that pasting it runs exactly that command.
"""

from __future__ import annotations

import shlex

__all__ = ["command", "then", "word"]


def command(*argv: object) -> str:
    """One command line from its arguments: ``command("virsh", "net-start", name)``."""
    return shlex.join(str(a) for a in argv)


def then(*commands: str) -> str:
    """Commands from :func:`command`, each run only when the one before succeeded."""
    return " && ".join(commands)


def word(value: object) -> str:
    """A value named in prose beside a command (a path, a URI), quoted as one shell word."""
    return shlex.quote(str(value))
