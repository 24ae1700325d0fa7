"""Fleet runs: one runbook on many daemon hosts, fanned out by Ansible.

- :mod:`opslib.fleet.playbooks`: the repository's playbooks (``ansible/``), the inventory read
  in-process for input checks, and ``ansible-playbook`` in a private directory with a
  scrubbed environment, its events read as they come (no secret reaches Ansible's
  artefacts or event stream);
- :mod:`opslib.fleet.ansible_playbook`: ``ansible-playbook`` as it is started, Python's
  garbage collector off while Ansible starts;
- :mod:`opslib.fleet.outcome`: Ansible's events folded into one row per host, records
  brought home into the workstation's store, the fleet run's manifest (``--retry-failed``,
  ``opsbook records --fleet-run``);
- :mod:`opslib.fleet.questions`: a fleet-wide question (find-vm-ip -p vm NAME): which host
  has it; the others are ok, "not on this host";
- :mod:`opslib.cli.fleet`: ``opsbook fleet run | install``.

Nothing here imports the lab: an inventory is all a fleet run knows of its hosts.
"""
