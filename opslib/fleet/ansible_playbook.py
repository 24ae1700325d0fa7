"""``python -E -P -m opslib.fleet.ansible_playbook ARGS``: ``ansible-playbook ARGS``, Python's
cyclic garbage collector off while Ansible starts.

Ansible's start (its imports, configuration, inventory and playbook: 0.3 to 0.4 s of a
one-host fleet run before its ssh starts) makes objects that live to the end of the run;
Python's collector went through them again and again as they came, about a quarter of that
start on this two-core machine. The collector is back on, with those objects frozen out of
its reach (``gc.freeze``: the workers forked from here do not copy them page by page when
they collect), once the play starts (``ansible/callback_plugins/opsbook_gc.py``, loaded for
every playbook of ``ansible/``). Nothing else differs from the ``ansible-playbook``
command: its code, options and exit code are Ansible's own.
"""

from __future__ import annotations

import gc
import sys


def main(argv: list[str]) -> None:
    gc.disable()
    from ansible.cli.playbook import main as playbook_main

    playbook_main(["ansible-playbook", *argv])  # exits with Ansible's code


if __name__ == "__main__":
    main(sys.argv[1:])
