"""Parameter sets (opslib.core.paramsets): what a bad file tells the operator, in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from opslib.core.errors import InputError


def test_a_parameter_set_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    from opslib.core.paramsets import load_param_file

    path = tmp_path / "set.yaml"
    path.write_bytes(b"host: h1\nnote: caf\xe9\n")  # Latin-1, as an old editor saves it
    with pytest.raises(InputError) as err:
        load_param_file(path)
    assert str(err.value) == f"{path}: not UTF-8 text (byte 0xe9 at line 2); save it as UTF-8"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("host: a\nvm: x\nhost: b\n", "line 3: host is given twice (first on line 1)"),
        ('host: a\n"host": b\n', "line 2: host is given twice (first on line 1)"),
    ],
)
def test_a_parameter_given_twice_in_a_set_is_refused_naming_the_line(
    tmp_path: Path, text: str, line: str
) -> None:
    from opslib.core.paramsets import load_param_file

    path = tmp_path / "set.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_param_file(path)
    assert str(err.value) == f"{path} {line}; keep one"


def test_the_strict_safe_loader_refuses_duplicate_keys_and_keeps_yaml_types() -> None:
    import yaml

    from opslib.core.paramsets import StrictSafeLoader

    assert yaml.load("a: 1\nb: [x]\n", Loader=StrictSafeLoader) == {"a": 1, "b": ["x"]}
    with pytest.raises(yaml.constructor.ConstructorError, match="a is given twice"):
        yaml.load("runs:\n  - a: 1\n    a: 2\n", Loader=StrictSafeLoader)
