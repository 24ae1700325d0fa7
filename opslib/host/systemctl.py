"""``systemctl``, as the host adapters call it (radvd's unit, the 6in4 tunnel's unit): a
missing systemctl is the host's error, a unit command that fails or hangs one line naming
it."""

from __future__ import annotations

import subprocess

from opslib.core import procs
from opslib.core.errors import ApplyError, HostError

TIMEOUT = 60.0  # seconds; a unit's restart that takes longer is stuck


def systemctl(*args: str, missing: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``systemctl ARGS``; ``missing``: why this host should have systemctl (the HostError's
    message when it has none). ``check``: a non-zero exit raises ApplyError."""
    try:
        done = subprocess.run(
            ["systemctl", *args], capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except FileNotFoundError as exc:
        raise HostError(f"systemctl is missing{missing}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ApplyError(f"systemctl {' '.join(args)} timed out") from exc
    if check and done.returncode != 0:
        tail = procs.last_line(done)
        raise ApplyError(f"systemctl {' '.join(args)} failed (rc {done.returncode}): {tail}")
    return done
