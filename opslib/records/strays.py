"""Files in a record store that are not records: named, never left out silently.

A ``*.ipynb`` under the store that is not a record notebook (not JSON, or JSON without
an opsbook header) cannot be indexed, so ``records reindex`` leaves it out, and with it
the site (``records html``) and the search (``records search``), which read the index.
Each of those commands names such files in one warning line (:func:`warning`): a file
damaged on disk or a stray notebook is seen, not silently missing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from opslib.records import store as records
from opslib.records import notebook_json

__all__ = ["not_records", "warning"]

NAMED = 5  # files a warning names; the rest are counted


def not_records(store: records.Store) -> list[str]:
    """The ``*.ipynb`` files under the store, relative to it, that are not record notebooks.

    Only files the index lacks are read: a record is indexed when it is filed, so this
    costs one walk of the store and the reading of the few files outside the index."""
    indexed: set[str] = set()
    if store.index_path.exists():
        with store.db() as con:
            indexed = {path for (path,) in con.execute("SELECT path FROM runs")}
    found = []
    for rel in store.record_paths():
        if rel in indexed:
            continue
        try:
            nb = json.loads((store.root / rel).read_bytes())
        except (OSError, ValueError):
            nb = None
        if notebook_json.header_of(nb) is None:
            found.append(rel)
    return found


def warning(names: Sequence[str]) -> str:
    """One line naming ``names`` (the first :data:`NAMED`), or '' when there are none."""
    if not names:
        return ""
    n = len(names)
    shown = ", ".join(names[:NAMED]) + (f" and {n - NAMED} more" if n > NAMED else "")
    return (
        f"{n} file{'s' * (n != 1)} in the store {'are' if n != 1 else 'is'} not a record "
        f"notebook (not JSON, or no opsbook header), so not indexed, shown or searched: "
        f"{shown}"
    )
