"""``opsbook_run``: run.yml's one remote step, without a module.

A shell script run over the task's own connection (``become`` as the play has it) with a
file of the workstation on its stdin, the way pipelining feeds a module: nothing is copied
to the host, and no Python starts there for Ansible (the ``shell`` module's wrapper took a
third of a second per host before opsbook itself started).

Arguments
  cmd          the script, run by /bin/sh on the host
  stdin_file   optional: a file on the workstation (this host's parameter set) whose text
               is the script's stdin; it never enters the task's arguments or its result,
               so it is in no Ansible artefact, log or command line
Result
  rc, stdout, stderr, as the ``shell`` module gives them (never failed: the play decides);
  ``record``, the record the run filed (from its ``record #N: PATH`` line), and ``said``,
  the run's last line, both read past the record sent ahead of them.
"""

from __future__ import annotations

import re

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

RECORD_END = "OPSBOOK-RECORD-END"  # ansible/run.yml's marker (opslib.fleet.outcome's too)
FILED = re.compile(r"record #[0-9]+: ([^ ,]+[.]ipynb)")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("cmd", "stdin_file"))
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):  # type: ignore[no-untyped-def]
        result = super().run(tmp, task_vars)
        cmd = self._task.args.get("cmd")
        if not isinstance(cmd, str) or not cmd.strip():
            raise AnsibleActionFail("opsbook_run: cmd (the script) is required")
        data = b""
        path = self._task.args.get("stdin_file")
        if path:
            try:
                with open(path, "rb") as fh:
                    data = fh.read()
            except OSError as exc:
                raise AnsibleActionFail(f"opsbook_run: stdin_file {path}: {exc.strerror}") from None
        # in_data: sent on the ssh channel's stdin after become (sudo -S reads a password
        # first when one is set), as pipelining sends a module. Never empty: without stdin
        # the ssh connection asks for a tty (-tt), which would fold stderr into stdout.
        res = self._low_level_execute_command(cmd, sudoable=True, in_data=data or b"\n")
        out, err = res.get("stdout", ""), res.get("stderr", "")
        said_all = out.split(RECORD_END)[-1] + "\n" + err
        filed = FILED.findall(said_all)
        lines = [ln for ln in said_all.strip().splitlines() if ln.strip()]
        result.update(
            rc=int(res.get("rc", 0)),
            stdout=out.rstrip("\n"),
            stderr=err.rstrip("\n"),
            changed=False,
            record=filed[0] if filed else "",
            said=lines[-1].strip() if lines else "",
        )
        return result
