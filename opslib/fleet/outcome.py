"""A fleet run's outcome: one row per host, its record brought home, the run's manifest.

Ansible's events (task names of ``ansible/run.yml``) fold into a :class:`HostRow` per host:
unreachable, a failed preflight (opsbook missing or too old), or the runbook's own exit
code and last line. Each record a host filed comes home into the workstation's store
(``records/HOST/…`` and its index) with the fleet run's id in its header; the host's
verdict in that record is the row's status. The manifest ``records/.fleet/ID.json`` lists
the run's hosts, statuses and records: ``--retry-failed`` reads the newest one,
``opsbook records --fleet-run ID`` the one it names, a scheduled fleet run's failure hook
(``opsbook schedule notify``) the newest of its runbook and inventory, as :func:`summary_line`.
"""

from __future__ import annotations

import base64
import gzip
import json
import secrets as token_bytes
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opslib.core.errors import InputError
from opslib.core.files import atomic_write

__all__ = [
    "Fold",
    "HostRow",
    "import_records",
    "latest_manifest",
    "load_manifest",
    "new_run_id",
    "summary_line",
    "write_manifest",
    "write_metrics",
]

STATUSES = ("ok", "changed", "failed", "unreachable", "bad-input", "skipped")
NOT_DONE = ("failed", "unreachable", "bad-input", "skipped")
# task names in ansible/run.yml
T_RUN = "Run the runbook"
T_OUTCOME = "Runbook outcome"  # fails the host: opsbook missing or too old, or the run failed
MANIFESTS = ".fleet"
# ansible/run.yml's markers: a preflight refusal, and a record sent ahead of opsbook's output
PREFLIGHT = "OPSBOOK-PREFLIGHT "
RECORD, RECORD_END = "OPSBOOK-RECORD ", "OPSBOOK-RECORD-END"


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{token_bytes.token_hex(2)}"


@dataclass
class HostRow:
    host: str
    status: str = "skipped"
    summary: str = "not run"
    record: str = ""  # "#ID PATH" in the workstation's store
    record_id: int | None = None
    rc: int | None = None


def _last_line(*texts: str) -> str:
    lines = [ln.strip() for t in texts for ln in (t or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def take_record(stdout: str, into: Path | None) -> str:
    """``stdout`` of the run task without the record ahead of it; the record, when there is
    one and ``into`` is given, written (unpacked) as ``into/NAME``."""
    if not stdout.startswith(RECORD) or RECORD_END not in stdout:
        return stdout
    block, _, rest = stdout.partition(RECORD_END)
    head, _, packed = block.partition("\n")
    name = Path(head[len(RECORD) :].strip()).name
    if into is not None and name.endswith(".ipynb"):
        try:
            body = gzip.decompress(base64.b64decode(packed.strip(), validate=True))
        except ValueError:  # binascii.Error and a bad gzip stream are both ValueErrors
            return rest.lstrip("\n")
        into.mkdir(parents=True, exist_ok=True)
        (into / name).write_bytes(body)
    return rest.lstrip("\n")


class Fold:
    """Ansible's events for one playbook run, folded into rows; ``say`` gets progress.
    Records sent inline in the run task's output land in ``fetched/HOST/``."""

    def __init__(
        self, hosts: Sequence[str], say: Callable[[str], None], fetched: Path | None = None
    ) -> None:
        self.rows = {h: HostRow(h) for h in hosts}
        self.say = say
        self.fetched = fetched
        self.stats: dict[str, dict[str, int]] = {}

    def __call__(self, event: Mapping[str, Any]) -> None:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind == "playbook_on_stats":
            for key in ("ok", "changed", "failures", "dark", "skipped"):
                for host, n in (data.get(key) or {}).items():
                    self.stats.setdefault(host, {})[key] = n
            return
        host, task = data.get("host"), data.get("task", "")
        row = self.rows.get(host or "")
        if row is None:
            return
        res = data.get("res") or {}
        if kind == "runner_on_start" and task == T_RUN:
            row.status, row.summary = "running", ""
            self.say(f"{host}: running")
        elif kind == "runner_on_unreachable":
            row.status = "unreachable"
            msg = str(res.get("msg", ""))
            why = _last_line(msg[msg.find("ssh:") :] if "ssh:" in msg else msg)
            row.summary = f"bring it back (link, sshd), then --retry-failed: {why}"
            self.say(f"{host}: unreachable: {why}")
        elif kind == "runner_on_ok" and task == T_RUN:
            stdout = str(res.get("stdout", ""))
            if stdout.startswith(PREFLIGHT):
                return  # refused before the run (no rc): T_OUTCOME's failure says why
            into = self.fetched / str(host) if self.fetched is not None else None
            stdout = take_record(stdout, into)
            row.rc = int(res.get("rc", 1))
            row.status = {0: "changed" if res.get("changed") else "ok", 2: "bad-input"}.get(
                row.rc, "failed"
            )
            row.summary = _last_line(stdout, res.get("stderr", ""))
            self.say(f"{host}: {row.status}: {row.summary}")
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            if task == T_OUTCOME and row.rc is not None:
                return  # the runbook's own failure: already in the row
            row.status = "failed"
            row.summary = _last_line(str(res.get("msg", ""))) or f"task {task!r} failed"
            if task != T_OUTCOME:  # else the preflight's refusal, one line naming the fix
                row.summary = f"{task}: {row.summary}"
            self.say(f"{host}: failed: {row.summary}")

    def finish(self, stopped_early: bool) -> list[HostRow]:
        for row in self.rows.values():
            if row.status == "running":  # started, never finished: Ansible said nothing more
                row.status, row.summary = "failed", "the run did not report back"
            elif row.status == "skipped" and stopped_early:
                row.summary = "not run: the rollout stopped at a failure (--max-fail-percentage)"
        return list(self.rows.values())


def import_records(rows: Sequence[HostRow], fetched: Path, store: Any, fleet_run: str) -> None:
    """File each host's fetched record in ``store`` (the fleet run's id in its header);
    the record's own verdict becomes the row's status."""
    from opslib.records.notebook_json import META_KEY

    for row in rows:
        for path in sorted((fetched / row.host).glob("*.ipynb")):
            try:
                nb = json.loads(path.read_bytes())
                header = dict(nb["metadata"][META_KEY])
            except (OSError, ValueError, KeyError, TypeError):
                row.summary += f" (record {path.name} unreadable)"
                continue
            origin = {"host": row.host, "record_id": header.get("id"), "file": path.name}
            header = {**header, "fleet_run": fleet_run, "fleet_origin": origin}
            run_id, filed = store.add(header, nb)
            row.record_id, row.record = run_id, f"#{run_id} {store.rel(filed)}"
            status = str(header.get("status", ""))
            if status == "ok":
                row.status = "changed" if header.get("changed") else "ok"
            elif status in ("failed", "bad-input"):
                row.status = status
            elif status:
                row.status = "failed"
            row.summary = str(header.get("summary") or row.summary)
            if status not in ("ok", "failed", "bad-input", ""):
                row.summary = f"{status}: {row.summary}"


def write_metrics(
    directory: Path,
    runbook: str,
    rows: Sequence[HostRow],
    store: Any,
    *,
    seconds: float,
    period: float | None = None,
) -> list[Path]:
    """Each host's Prometheus metrics (:mod:`opslib.engine.metrics`), as its own run would write
    them on the host: ``opsbook-HOST@RUNBOOK.prom`` with labels host and runbook. An
    unreachable or skipped host's run did not succeed (its last success is kept); the
    checks come from the record it brought home."""
    from opslib.engine import metrics
    from opslib.records import notebook_json

    ended = datetime.now(UTC).timestamp()
    written = []
    for row in rows:
        checks: tuple[tuple[str, bool], ...] = ()
        if row.record_id is not None:
            try:
                nb = store.notebook(store.get(row.record_id))
                checks = metrics.checks_of(notebook_json.final_result(notebook_json.results_of(nb)))
            except Exception:  # an unreadable record: the run's status still counts
                checks = ()
        m = metrics.RunMetrics(
            row.host,
            runbook,
            row.status in ("ok", "changed"),
            ended,
            seconds,
            row.status == "changed",
            checks,
            period,
        )
        written.append(metrics.write(directory, m))
    return written


def write_manifest(store_root: Path, run: Mapping[str, Any], rows: Sequence[HostRow]) -> Path:
    path = store_root / MANIFESTS / f"{run['id']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {**run, "hosts": {r.host: asdict(r) for r in rows}}
    atomic_write(path, json.dumps(body, indent=2) + "\n", mode=0o600)
    return path


def load_manifest(store_root: Path, run_id: str | None = None) -> dict[str, Any]:
    """The fleet run ``run_id``, or the newest one; InputError when there is none."""
    folder = store_root / MANIFESTS
    if run_id is None:
        found = sorted(folder.glob("*.json")) if folder.is_dir() else []
        if not found:
            raise InputError(f"no fleet run in {store_root}: nothing to retry")
        path = found[-1]
    else:
        path = folder / f"{run_id}.json"
        if "/" in run_id or not path.is_file():
            known = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
            raise InputError(
                f"no fleet run {run_id!r} in {store_root}"
                + (f"; newest: {', '.join(known[-3:])}" if known else "")
            )
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable fleet run manifest: {exc}") from None


def summary_line(runbook: str, hosts: Iterable[Mapping[str, Any]], width: int = 80) -> str:
    """One line naming a fleet run's result and every host that is not ok, e.g.
    ``host-health on 3 hosts: 2 ok, 1 failed (fl3: 1 failed: br0 up), 0 unreachable``."""
    rows = list(hosts)
    by: dict[str, list[Mapping[str, Any]]] = {s: [] for s in STATUSES}
    for row in rows:
        by.setdefault(str(row.get("status")), []).append(row)
    ok = len(by["ok"]) + len(by["changed"])
    changed = f" ({len(by['changed'])} changed)" if by["changed"] else ""

    def why(row: Mapping[str, Any]) -> str:
        text = str(row.get("summary") or "").strip()
        return f"{row['host']}: {text[: width - 1] + '…' if len(text) > width else text}"

    parts = [f"{ok} ok{changed}"]
    for status in ("failed", "unreachable", "bad-input", "skipped"):
        hosts_of = by.pop(status, [])
        if hosts_of or status in ("failed", "unreachable"):
            named = [why(r) if status != "unreachable" else str(r["host"]) for r in hosts_of]
            parts.append(f"{len(hosts_of)} {status}" + (f" ({'; '.join(named)})" if named else ""))
    for status, others in by.items():  # a status this version does not know
        if others and status not in STATUSES:
            parts.append(f"{len(others)} {status} ({', '.join(str(r['host']) for r in others)})")
    return f"{runbook} on {len(rows)} host{'s' if len(rows) != 1 else ''}: {', '.join(parts)}"


def latest_manifest(store_root: Path, runbook: str, inventory: Path) -> dict[str, Any] | None:
    """The newest fleet run of ``runbook`` on ``inventory`` in the store, if any."""
    folder = store_root / MANIFESTS
    for path in sorted(folder.glob("*.json"), reverse=True) if folder.is_dir() else []:
        try:
            body = dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
        same = Path(str(body.get("inventory", ""))).resolve() == inventory.resolve()
        if body.get("runbook") == runbook and same:
            return body
    return None
