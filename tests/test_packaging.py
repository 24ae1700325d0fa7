"""The project's own files agree on what it needs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(spec: str) -> str:
    return re.split(r"[<>=!~ \[]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_lists_the_same_packages_as_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_side = {_name(d) for d in project["dependencies"]}
    for extra in ("test", "fleet"):
        pip_side |= {_name(d) for d in project["optional-dependencies"][extra]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_side = {_name(d) for d in env["dependencies"] if isinstance(d, str)} - {"python"}
    assert pip_side == conda_side, (
        f"only in pyproject: {sorted(pip_side - conda_side)}; "
        f"only in environment.yml: {sorted(conda_side - pip_side)}"
    )


def test_environment_yml_python_matches_requires_python() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pythons = [d for d in env["dependencies"] if isinstance(d, str) and _name(d) == "python"]
    assert pythons == [f"python{project['requires-python']}"]


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./scripts/test.sh" in readme
    assert "./scripts/test.sh" in ci


def test_every_debian_package_is_listed_once() -> None:
    lines = (ROOT / "scripts" / "debian-packages.txt").read_text().splitlines()
    pkgs = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(pkgs) == len(set(pkgs)), "a Debian package is listed twice"
