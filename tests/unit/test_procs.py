"""procs.run: a command's failure is one HostError line an operator can act on."""

from __future__ import annotations

import pytest

from opslib.core import procs
from opslib.core.errors import HostError


def test_a_failing_command_is_one_line_quoting_its_last_error() -> None:
    with pytest.raises(HostError) as caught:
        procs.run(["sh", "-c", "echo working; echo first >&2; echo 'disk full' >&2; exit 3"])
    assert str(caught.value) == (
        "sh -c 'echo working; echo first >&2; echo '\"'\"'disk full'\"'\"' >&2; exit 3' "
        "failed (rc 3): disk full"
    )


def test_what_names_the_command_and_check_false_returns_the_exit() -> None:
    with pytest.raises(HostError, match=r"^ssh daemon1 true failed \(rc 1\): no output$"):
        procs.run(["false"], what="ssh daemon1 true")
    assert procs.run(["sh", "-c", "exit 4"], check=False).returncode == 4


def test_a_missing_program_names_where_to_install_it() -> None:
    with pytest.raises(HostError, match=r"^opsbook-no-such-tool is missing; install it"):
        procs.run(["opsbook-no-such-tool"])


def test_a_timeout_says_after_how_long() -> None:
    with pytest.raises(HostError, match=r"^sleep 30 timed out after 0s$"):
        procs.run(["sleep", "30"], timeout=0.2)


def test_input_reaches_the_command() -> None:
    assert procs.run(["cat"], input="eth0\n").stdout == "eth0\n"
