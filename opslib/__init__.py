"""opslib: the procedures behind opsbook's networking runbooks.

Notebooks in ``notebooks/`` stay thin and call into the modules here; every
entry point takes the host it acts on (libvirt URI, network namespace, paths)
as arguments, so that the same code serves a lab, a real host, or a fleet.
"""

__version__ = "0.1.0"
