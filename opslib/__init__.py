"""opslib: the procedures behind opsbook's networking runbooks.

Notebooks in ``notebooks/`` stay thin and call into the modules here; every
entry point takes the host it acts on (libvirt URI, network namespace, paths)
as arguments, so that the same code serves a lab, a real host, or a fleet.
"""

import sys

__version__ = "0.1.0"

# jsonschema (under nbformat, papermill, jupyter) imports rfc3987_syntax when it is
# installed, only to check the "iri" format, and that module compiles a Lark grammar
# at import: 2.5 s on every `opsbook run` and kernel start. Nothing here validates
# IRIs, so make that optional import fail fast (jsonschema then skips the checker).
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
