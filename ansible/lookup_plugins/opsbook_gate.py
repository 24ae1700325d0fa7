"""``opsbook_gate``: the hosts a play runs on, given by ``opsbook fleet run`` once it has
checked them.

``lookup('opsbook_gate', PATH)`` waits until the file PATH is there and returns its text,
a comma-separated list of host names ("" for none: the play matches no host). ansible/run.yml
takes its ``hosts`` from it when ``opsbook_gate`` is set, so Ansible starts (its Python, the
inventory, the playbook) while the workstation checks each host's parameters, and touches
no host before it has its answer. It gives up when the process that started Ansible is gone
or after :data:`WAIT` seconds.
"""

from __future__ import annotations

import os
import time

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

WAIT = 600.0  # the workstation checks every host's parameter set first: generous
EVERY = 0.01


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):  # type: ignore[no-untyped-def]
        if len(terms) != 1:
            raise AnsibleLookupError("opsbook_gate takes one path")
        path, parent = str(terms[0]), os.getppid()
        deadline = time.monotonic() + WAIT
        while not os.path.exists(path):
            if os.getppid() != parent or time.monotonic() > deadline:
                raise AnsibleLookupError(f"opsbook_gate: no hosts given at {path}")
            time.sleep(EVERY)
        with open(path, encoding="utf-8") as fh:
            return [fh.read().strip()]
