"""``opsbook_quick_exit``: ansible-playbook ends as soon as its run has.

Once the play recap is out, nothing is left to do but exit, yet Python's last garbage
collection at exit went through every object Ansible made: most of a second after the recap
on this two-core machine, for which ``opsbook fleet run`` waited. At the recap this moves
every object to the permanent generation, which that last collection skips (the process
ends: its memory goes with it). Loaded for every playbook of this directory; changes
nothing else.
"""

from __future__ import annotations

import gc

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "opsbook_quick_exit"
    CALLBACK_NEEDS_ENABLED = False

    def v2_playbook_on_stats(self, stats):  # type: ignore[no-untyped-def]
        gc.freeze()
