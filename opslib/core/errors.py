"""The one exception tree of opslib.

Errors of libvirt, pyroute2 (netlink), HTTP and the file system are translated
where opslib calls them (``raise ... from``), so callers branch on these::

    OpsError                      anything opslib raises on purpose
    ├── InputError                bad parameter or unusable input: exit code 2
    │   └── UnknownName           a VM / network that does not exist (with suggestions)
    ├── HostError                 the host cannot do it: not root, package missing, no space
    │   └── Unsupported           the kernel lacks a feature (e.g. no sit tunnels)
    ├── BackendError              a dependency failed while talking to it
    │   ├── LibvirtError          libvirt (keeps libvirt's error code)
    │   ├── NetlinkError          rtnetlink via pyroute2 (keeps the errno)
    │   └── ApiError              an HTTP API (Cloudflare): keeps status, never the token
    ├── ApplyError                a change could not be made or verified
    │   ├── VerificationFailed    applied, but the check afterwards failed
    │   └── StalePlan             a saved plan no longer matches the host: plan again
    ├── LockHeld                  another run holds the host's apply lock
    └── SecretError               a secret source is missing, unreadable or leaked

Every message is one line that names the problem and, where there is one, the fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from difflib import get_close_matches


class OpsError(Exception):
    """Root of every error opslib raises on purpose."""

    exit_code = 1


class InputError(OpsError):
    """A parameter or input is wrong; nothing was changed."""

    exit_code = 2


MAX_KNOWN = 10  # names an UnknownName lists when none is close: a host may have hundreds


class UnknownName(InputError):
    """A named object (VM, network, runbook) does not exist."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        known = sorted(known)
        close = get_close_matches(name, known, n=3, cutoff=0.5)
        more = f" and {len(known) - MAX_KNOWN} more" if len(known) > MAX_KNOWN else ""
        hint = (
            f"did you mean {', '.join(close)}?"
            if close
            else (
                f"known: {', '.join(known[:MAX_KNOWN])}{more}"
                if known
                else f"there is no {kind} at all"
            )
        )
        super().__init__(f"no {kind} named {name!r}; {hint}")
        self.kind, self.name, self.suggestions = kind, name, close


class HostError(OpsError):
    """The host lacks something the procedure needs (root, a package, space)."""

    exit_code = 2


class Unsupported(HostError):
    """The running kernel or libvirt lacks a feature."""


class BackendError(OpsError):
    """A dependency (libvirt, netlink, an HTTP API) failed."""


class LibvirtError(BackendError):
    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class NetlinkError(BackendError):
    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class ApiError(BackendError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ApplyError(OpsError):
    """A change could not be made."""


class VerificationFailed(ApplyError):
    """A change was made but the check after it failed."""


class StalePlan(ApplyError):
    """A saved plan (``opsbook plan``) no longer matches what the host has; nothing done."""


class LockHeld(OpsError):
    """Another run holds the apply lock of this host."""


class SecretError(OpsError):
    """A secret could not be read, or appeared where it must not."""

    exit_code = 2
