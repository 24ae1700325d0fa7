"""Secret sources: read from a file or the environment, never echoed, found when leaked."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from opslib.core import secrets
from opslib.core.errors import SecretError

VALUE = "tok-3f9a1c77e2"


def test_file_source_drops_one_trailing_newline(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text(VALUE + "\n")
    f.chmod(0o600)
    assert secrets.load(f"file:{f}") == VALUE
    assert VALUE in secrets.loaded()


def test_world_readable_file_warns_without_the_value(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "token"
    f.write_text(VALUE)
    f.chmod(0o644)
    secrets.load(f"file:{f}")
    err = capsys.readouterr().err
    assert "world-readable; chmod o-r" in err and VALUE not in err


def test_the_suggested_chmod_is_one_command_whatever_the_files_name(  # type: ignore[no-untyped-def]
    tmp_path: Path, capsys
) -> None:
    f = tmp_path / "cf token;touch pwned"
    f.write_text(VALUE)
    f.chmod(0o644)
    secrets.load(f"file:{f}")
    err = capsys.readouterr().err
    suggested = err.strip().split("; ", 1)[1]  # "warning: … world-readable; CMD"
    assert shlex.split(suggested) == ["chmod", "o-r", str(f)]


def test_env_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OB_TEST_TOKEN", VALUE)
    assert secrets.load("env:OB_TEST_TOKEN") == VALUE
    monkeypatch.delenv("OB_TEST_TOKEN")
    with pytest.raises(SecretError, match="env:OB_TEST_TOKEN: the variable is not set"):
        secrets.load("env:OB_TEST_TOKEN")


def test_missing_file_and_short_values_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="no such file"):
        secrets.load(f"file:{tmp_path}/absent")
    short = tmp_path / "short"
    short.write_text("abc")
    short.chmod(0o600)
    with pytest.raises(SecretError, match="shorter than 8") as err:
        secrets.load(f"file:{short}")
    assert "abc" not in str(err.value)


def test_leaks_are_found_raw_and_json_escaped_and_scrubbed() -> None:
    tricky = 'pa"ss\\word-123'
    data = b'{"text": "token is pa\\"ss\\\\word-123"}'
    assert secrets.find_leaks(data, [tricky]) == 1
    cleaned = secrets.scrub(data, [tricky])
    assert secrets.find_leaks(cleaned, [tricky]) == 0 and b"[secret redacted]" in cleaned


TOKEN = "Cf-T0ken/4a+9Z=b7"  # mixed case, and characters a URL quotes


@pytest.mark.parametrize(
    "form",
    [
        TOKEN.lower(),  # a DNS name made from it
        TOKEN.upper(),
        "cf-t0KEN/4A+9z=B7",  # any mix of cases
        "Cf-T0ken%2F4a%2B9Z%3Db7",  # URL-quoted (quote(safe=""))
        "cf-t0ken%2f4a%2b9z%3db7",  # URL-quoted, then lowercased
        "Cf-T0ken/4a%2B9Z%3Db7",  # URL-quoted, "/" kept (quote's default)
    ],
)
def test_a_transformed_copy_of_a_secret_is_found_and_scrubbed(form: str) -> None:
    data = json.dumps({"text": f"name {form}.example.org"}).encode()
    assert secrets.find_leaks(data, [TOKEN]) == 1
    cleaned = secrets.scrub(data, [TOKEN])
    assert json.loads(cleaned) == {"text": "name [secret redacted].example.org"}


def test_a_non_ascii_secret_is_found_lowercased_and_json_escaped() -> None:
    token = "Jöran-Schlüssel-42"
    for form in (token.lower(), token.upper()):
        data = json.dumps({"text": form}).encode()  # \u00f6 escapes, as a notebook writes
        assert secrets.find_leaks(data, [token]) == 1, form
        assert json.loads(secrets.scrub(data, [token])) == {"text": "[secret redacted]"}


def test_text_without_the_secret_is_left_alone() -> None:
    data = b'{"text": "cf-t0ken/4a+9z=b8 is another value"}'
    assert secrets.find_leaks(data, [TOKEN]) == 0
    assert secrets.scrub(data, [TOKEN]) == data
    assert secrets.contains("ZONE-" + TOKEN.swapcase(), [TOKEN])
    assert not secrets.contains("vm1.example.org", [TOKEN])
