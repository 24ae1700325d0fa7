"""``opsbook notebook`` refuses bad input in one line, before JupyterLab or its state exist.

The real thing (JupyterLab on the booted host, through an SSH tunnel, in chromium):
tests/lab/test_97_browser_booted_host.py.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from opslib.cli import main


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("OPSBOOK_DEFAULTS", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "state"


@pytest.fixture
def taken() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    rc = main.main(["notebook", *args])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_a_port_in_use_is_refused_naming_port(
    state: Path, taken: int, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out = run(capsys, "--port", str(taken))
    assert rc == 2
    assert out == (
        f"opsbook: 127.0.0.1:{taken} is in use on this host (another JupyterLab?); "
        "pick another with --port, and use it in the tunnel\n"
    )
    assert not state.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "70000"], "--port 70000: not a TCP port; use 1-65535 (default 8888)"),
        (["--defaults", "nowhere"], "--defaults nowhere: no such directory of parameter sets"),
    ],
)
def test_bad_arguments_are_one_line_each(
    state: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    rc, out = run(capsys, *args)
    assert (rc, out) == (2, f"opsbook: {message}\n")
    assert not state.exists()
