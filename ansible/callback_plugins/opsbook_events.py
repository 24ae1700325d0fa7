"""``opsbook_events``: Ansible's events, one JSON line each, for ``opsbook fleet``.

``opsbook fleet run | install`` starts ansible-playbook with ``OPSBOOK_EVENTS_FD`` set to the
write end of a pipe it reads: each task's start and outcome on a host, and the recap, as
``{"event": "runner_on_ok", "event_data": {"host": …, "task": …, "res": {…}}}``. Only the
fields the fleet reads are sent, as they happen, from Ansible's main process (one writer:
lines do not interleave). Without the variable (the playbook run by hand) it does nothing.
"""

from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

STATS = ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored")


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "opsbook_events"
    CALLBACK_NEEDS_ENABLED = False

    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        fd = os.environ.get("OPSBOOK_EVENTS_FD", "")
        self._out = os.fdopen(int(fd), "w", encoding="utf-8") if fd.isdigit() else None

    def _send(self, event, **data):  # type: ignore[no-untyped-def]
        if self._out is None:
            return
        line = json.dumps({"event": event, "event_data": data}, default=str)
        try:
            self._out.write(line + "\n")
            self._out.flush()
        except OSError:  # the reader is gone (the fleet command was killed): run on, unheard
            self._out = None

    def _result(self, event, result, **extra):  # type: ignore[no-untyped-def]
        self._send(
            event,
            host=result._host.get_name(),
            task=result._task.get_name(),
            res=dict(result._result),
            **extra,
        )

    def v2_runner_on_start(self, host, task):  # type: ignore[no-untyped-def]
        self._send("runner_on_start", host=host.get_name(), task=task.get_name())

    def v2_runner_on_ok(self, result):  # type: ignore[no-untyped-def]
        self._result("runner_on_ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):  # type: ignore[no-untyped-def]
        self._result("runner_on_failed", result, ignore_errors=bool(ignore_errors))

    def v2_runner_on_unreachable(self, result):  # type: ignore[no-untyped-def]
        self._result("runner_on_unreachable", result)

    def v2_runner_on_skipped(self, result):  # type: ignore[no-untyped-def]
        self._result("runner_on_skipped", result)

    def v2_playbook_on_stats(self, stats):  # type: ignore[no-untyped-def]
        self._send("playbook_on_stats", **{k: dict(getattr(stats, k, {}) or {}) for k in STATS})
