"""``opsbook_gc``: Python's garbage collector in ansible-playbook, for a command that starts
many objects at once and ends.

At the play's start: every object Ansible's start made is moved to the permanent generation
(``gc.freeze``), which no collection goes through (nor copies into the workers forked after,
page by page, as a collection there did), and the collector is switched on, in case it was
off while Ansible started (``opslib/fleet/ansible_playbook.py``, how ``opsbook fleet`` runs
ansible-playbook). At the play recap, the same: Python's last collection at exit went
through every object Ansible made, most of a second after the recap on this two-core
machine, for which ``opsbook fleet run`` waited (the process ends: its memory goes with
it). Loaded for every playbook of this directory; changes nothing else.
"""

from __future__ import annotations

import gc

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "opsbook_gc"
    CALLBACK_NEEDS_ENABLED = False

    def v2_playbook_on_play_start(self, play):  # type: ignore[no-untyped-def]
        gc.freeze()
        gc.enable()

    def v2_playbook_on_stats(self, stats):  # type: ignore[no-untyped-def]
        gc.freeze()
