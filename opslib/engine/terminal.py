"""The operator's terminal of ``opsbook run``: a run outlives it.

An SSH session cut in the middle of a run hangs up its terminal (SIGHUP) or closes the
pipes its output goes to. A run must not die of that, nor fail on its next line of
output (a broken pipe): it goes on quietly, its last line goes to the journal, and its
record notes when the terminal was lost. SIGTERM still ends a run (as killed): the
runner (opslib.engine.runner) handles the signals and this module the output.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Iterator
from typing import TextIO

from opslib.records import clock

__all__ = ["GONE", "Terminal", "journal"]


class Terminal:
    """The operator's terminal (``opsbook run``'s stdout and stderr). When it goes away
    (SIGHUP, or a write failing with EPIPE or EIO: the SSH session was cut), the run goes
    on without it: from then on both point at /dev/null (no later write can fail), what
    the terminal would have shown goes to the journal, and the record notes when."""

    def __init__(self, label: str = "opsbook run") -> None:
        self.label = label  # names the run in the journal
        self.lost = ""  # "WHEN (HOW)" once lost

    def lose(self, how: str) -> None:
        if self.lost:
            return
        self.lost = f"{clock.iso(clock.utcnow())} ({how})"
        journal(f"{self.label}: the terminal was lost at {self.lost}; the run goes on")
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            for fd in (1, 2):
                with contextlib.suppress(OSError):
                    os.dup2(devnull, fd)
        finally:
            os.close(devnull)

    def write(self, stream: TextIO, text: str) -> None:
        """``text`` to ``stream`` unless the terminal is gone (losing it if the write fails)."""
        if self.lost:
            return
        try:
            stream.write(text)
            stream.flush()
        except OSError:  # BrokenPipeError, or EIO from a hung-up tty
            self.lose(GONE)

    @contextlib.contextmanager
    def watched(self) -> Iterator[None]:
        """Notice the terminal going away when it goes (a pipe whose reader closed, a tty
        hung up: poll says POLLERR or POLLHUP), not at the run's next line of output."""
        wake_r, wake_w = os.pipe()  # written at the end: the watcher wakes at once

        def watch() -> None:
            poller = select.poll()
            for fd in (1, 2):
                poller.register(fd, 0)  # only POLLERR, POLLHUP, POLLNVAL come back
            poller.register(wake_r, select.POLLIN)
            while not self.lost:
                events = poller.poll()
                if any(fd == wake_r for fd, _ev in events):
                    return
                if any(ev & (select.POLLERR | select.POLLHUP) for _fd, ev in events):
                    self.lose(GONE)
                if any(ev & select.POLLNVAL for _fd, ev in events):
                    return  # closed by the program itself: nothing to watch

        thread = threading.Thread(target=watch, name="opsbook-terminal", daemon=True)
        thread.start()
        try:
            yield
        finally:
            os.write(wake_w, b"x")
            thread.join(2)
            os.close(wake_r)
            os.close(wake_w)


GONE = "its output went away"


def journal(message: str) -> None:
    """One line to the system log (the journal on a systemd host), tagged opsbook."""
    import syslog

    syslog.openlog("opsbook", syslog.LOG_PID)
    syslog.syslog(syslog.LOG_NOTICE, message)
