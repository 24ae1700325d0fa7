"""Local accounts: ``/etc/passwd``, ``/etc/group``, ``login.defs``, the login files in a
home, and commands run as an account.

Reading is relative to ``root`` ("/" on a host, a temporary tree in tests) and parsing
is pure. Group membership changes through ``gpasswd`` (shadow's tool: it locks
``/etc/group`` and ``/etc/gshadow`` and keeps both in step). A login file is read and
replaced as the account's own file, never through a symlink: root writes into a
directory the account controls. Commands run as an account through ``runuser -l`` (its
login environment) with no controlling terminal (a new session, stdin from /dev/null),
so the account's login files, which run as the account, cannot push keystrokes into
root's terminal (TIOCSTI).
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from opslib.core import files, procs
from opslib.core.errors import ApplyError, HostError, InputError

# login.defs(5) defaults when the file does not say
UID_MIN, UID_MAX = 1000, 60000
NOLOGIN = ("nologin", "false", "sync", "halt", "shutdown")
MAX_LOGIN_FILE = 1 << 20  # a login file larger than this is not one


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str
    shell: str


@dataclass(frozen=True)
class Group:
    name: str
    gid: int
    members: tuple[str, ...]
    line: str  # as it stands in /etc/group


# --- parsing (pure) -------------------------------------------------------------------
def _entries(text: str, width: int) -> Iterator[tuple[str, list[str]]]:
    """(line, its fields) of the lines of a colon file with ``width`` fields; NIS (+/-)
    entries and comments skipped."""
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) == width and fields[0] and not fields[0].startswith(("+", "-", "#")):
            yield line, fields


def parse_passwd(text: str) -> dict[str, Account]:
    found: dict[str, Account] = {}
    for _line, f in _entries(text, 7):
        with contextlib.suppress(ValueError):
            found.setdefault(f[0], Account(f[0], int(f[2]), int(f[3]), f[5], f[6]))
    return found


def parse_group(text: str) -> dict[str, Group]:
    found: dict[str, Group] = {}
    for line, f in _entries(text, 4):
        members = tuple(m for m in f[3].split(",") if m)
        with contextlib.suppress(ValueError):
            found.setdefault(f[0], Group(f[0], int(f[2]), members, line))
    return found


def uid_range(login_defs: str) -> tuple[int, int]:
    """UID_MIN and UID_MAX of login.defs: the range of people's accounts."""
    values = {"UID_MIN": UID_MIN, "UID_MAX": UID_MAX}
    for line in login_defs.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in values and words[1].isdigit():
            values[words[0]] = int(words[1])
    return values["UID_MIN"], values["UID_MAX"]


def is_human(account: Account, uids: tuple[int, int]) -> bool:
    """A person's account: a uid in login.defs' range and a shell one can log in with."""
    shell = os.path.basename(account.shell)
    return uids[0] <= account.uid <= uids[1] and bool(shell) and shell not in NOLOGIN


def in_group(account: Account, group: Group) -> bool:
    """Listed in the group, or the group is its primary group."""
    return account.name in group.members or account.gid == group.gid


def group_members(group: Group, accounts: Mapping[str, Account]) -> list[str]:
    """Every account in ``group`` (listed, or by primary group), sorted."""
    names = set(group.members) & set(accounts)
    names |= {a.name for a in accounts.values() if a.gid == group.gid}
    return sorted(names)


def with_member(line: str, account: str) -> str:
    """The /etc/group line with ``account`` added at the end (what ``gpasswd -a`` writes)."""
    members = [m for m in line.split(":")[3].split(",") if m]
    head = line.rsplit(":", 1)[0]
    return f"{head}:{','.join([*members, account])}"


# --- reading ----------------------------------------------------------------------------
def _read(root: str, name: str) -> str:
    path = Path(root, name.lstrip("/"))
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise HostError(f"cannot read {path}: {exc.strerror}") from exc


def accounts(root: str = "/") -> dict[str, Account]:
    return parse_passwd(_read(root, "etc/passwd"))


def groups(root: str = "/") -> dict[str, Group]:
    return parse_group(_read(root, "etc/group"))


def human_uids(root: str = "/") -> tuple[int, int]:
    return uid_range(_read(root, "etc/login.defs"))


def home_path(root: str, account: Account) -> Path:
    return Path(root, account.home.lstrip("/"))


@dataclass(frozen=True)
class FileState:
    """A file as found: its text (None: absent), mode and owner, or the symlink it is."""

    path: str
    text: str | None
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    link: str = ""  # the target when the path is a symlink (text is None then)


def read_file(path: str | Path) -> FileState:
    """The file without following a symlink at its name (O_NOFOLLOW)."""
    path = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return FileState(path, None)
    except OSError as exc:
        if os.path.islink(path):
            return FileState(path, None, link=os.readlink(path))
        raise HostError(f"cannot read {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_LOGIN_FILE:
            raise InputError(f"{path} is not a regular file of at most 1 MiB; look at it first")
        raw = fh.read(MAX_LOGIN_FILE + 1)
    return FileState(path, raw.decode("utf-8", "surrogateescape"), st.st_mode & 0o7777,
                     st.st_uid, st.st_gid)  # fmt: skip


def write_file(path: str, text: str, *, mode: int, uid: int, gid: int) -> None:
    """Replace ``path`` atomically with a file of this mode and owner (the rename replaces
    a symlink at the name, never writes through it)."""
    try:
        files.atomic_write(
            path, text.encode("utf-8", "surrogateescape"), mode=mode, owner=(uid, gid),
            parents=False,
        )  # fmt: skip
    except OSError as exc:
        raise ApplyError(f"cannot write {path}: {exc.strerror}") from exc


def put_back(state: FileState) -> str:
    """The file as :func:`read_file` found it: its text, mode and owner, or no file; what
    it did (:func:`opslib.core.files.restore_as_observed`)."""

    def write(text: str) -> None:
        write_file(state.path, text, mode=state.mode, uid=state.uid, gid=state.gid)

    return files.restore_as_observed(state.path, state.text, write=write)


# --- commands -----------------------------------------------------------------------------
def _command(argv: list[str], what: str, *, timeout: float = 30) -> str:
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except FileNotFoundError as exc:
        raise HostError(f"{argv[0]} is missing; apt-get install passwd util-linux") from exc
    except subprocess.TimeoutExpired as exc:
        raise ApplyError(f"{what}: {argv[0]} took over {timeout:.0f}s") from exc
    if proc.returncode != 0:
        tail = procs.last_line(proc)
        raise ApplyError(f"{what} failed: {tail}")
    return proc.stdout


def add_member(group: str, account: str) -> None:
    """``gpasswd -a ACCOUNT GROUP``."""
    _command(["gpasswd", "-a", account, group], f"adding {account} to group {group}")


def remove_member(group: str, account: str) -> None:
    """``gpasswd -d ACCOUNT GROUP``."""
    _command(["gpasswd", "-d", account, group], f"removing {account} from group {group}")


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


def run_as(
    account: str, command: str, *, env: Mapping[str, str] | None = None, timeout: float = 60
) -> Ran:
    """``runuser -l ACCOUNT -c COMMAND``: in the account's login environment (its login
    shell reads its login files), without a terminal. ``env`` is kept through the login
    (``runuser -w``) for what the command needs beside the account's own settings."""
    keep = dict(env or {})
    argv = ["runuser", "-l", account]
    if keep:
        argv += ["-w", ",".join(sorted(keep))]
    argv += ["-c", command]
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False,
            stdin=subprocess.DEVNULL, start_new_session=True, env={**os.environ, **keep},
        )  # fmt: skip
    except FileNotFoundError as exc:
        raise HostError("runuser is missing; apt-get install util-linux") from exc
    except subprocess.TimeoutExpired as exc:
        raise ApplyError(f"{command!r} as {account} took over {timeout:.0f}s") from exc
    return Ran(proc.returncode, proc.stdout, proc.stderr)


__all__ = [
    "Account",
    "FileState",
    "Group",
    "Ran",
    "accounts",
    "add_member",
    "group_members",
    "groups",
    "home_path",
    "human_uids",
    "in_group",
    "is_human",
    "parse_group",
    "parse_passwd",
    "put_back",
    "read_file",
    "remove_member",
    "run_as",
    "uid_range",
    "with_member",
]
