"""The command line is built for the command given (opslib.cli.main.build_parser): what
each command accepts and says in its help is what the whole command line has."""

from __future__ import annotations

import argparse

import pytest

from opslib.cli import main


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every command and subcommand of ``parser`` ("fleet run": its parser)."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f"{name} {k}": v for k, v in _commands(sub).items()})
    return found


def test_the_areas_name_every_command_in_the_order_of_the_help() -> None:
    whole = [name for name in _commands(main.build_parser()) if " " not in name]
    assert whole == [name for names, _add in main.AREAS for name in names]


@pytest.mark.parametrize("command", [name for names, _add in main.AREAS for name in names])
def test_a_command_built_alone_is_the_command_of_the_whole_line(command: str) -> None:
    whole = _commands(main.build_parser())
    alone = _commands(main.build_parser(command))
    area = next(names for names, _add in main.AREAS if command in names)
    mine = {name: p for name, p in whole.items() if name.split()[0] in area}
    assert list(alone) == list(mine)
    for name, parser in mine.items():
        assert alone[name].format_help() == parser.format_help(), name


def test_options_first_and_unknown_commands_get_the_whole_line() -> None:
    assert main._command(["--version"]) is None and main._command([]) is None
    assert main._command(["-h", "fleet"]) is None and main._command(["flet"]) is None
    assert main._command(["fleet", "run", "x"]) == "fleet"


def test_an_unknown_command_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main.main(["no-such-command"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'no-such-command'" in err
    assert all(f"'{name}'" in err for names, _add in main.AREAS for name in names)
