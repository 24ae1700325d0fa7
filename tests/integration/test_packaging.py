"""The project's own files agree on what it needs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from support import REPO

from opslib.records import header

ROOT = REPO


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


def _builds_wheels(python: str) -> bool:
    """Whether ``python`` builds a wheel offline (its own setuptools and wheel)."""
    probe = subprocess.run([python, "-c", "import setuptools, wheel"], capture_output=True)
    return probe.returncode == 0


# The wheelhouse's python (build-wheelhouse.sh's default $PYTHON): Debian's python3 has the
# setuptools and wheel to build opsbook's wheel without a package index.
TARGET = "/usr/bin/python3"


def test_an_installed_opsbook_names_the_revision_its_wheel_was_built_from(
    tmp_path: Path,
) -> None:
    # scripts/debian-packages.txt installs python3-setuptools and python3-wheel
    assert _builds_wheels(TARGET), f"{TARGET} has no setuptools and wheel: run ./scripts/setup.sh"
    before = header.repo_revision()  # this checkout's, from git
    build = ROOT / "scripts" / "build-wheelhouse.sh"
    sources = subprocess.run(
        ["sh", str(build), "--sources", str(tmp_path / "src")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sources.returncode == 0, sources.stderr
    after = header.repo_revision()  # a helper may commit meanwhile
    assert re.fullmatch(r"[0-9a-f]{12}(-dirty)?", before), before
    pip_wheel = [TARGET, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    wheel = subprocess.run(
        [*pip_wheel, "--no-index", "--wheel-dir", str(tmp_path / "wheels"), str(tmp_path / "src")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert wheel.returncode == 0, wheel.stderr
    [whl] = (tmp_path / "wheels").glob("opslib-*.whl")
    # installed as install-daemon-host.sh installs it: no checkout beside the package
    pip_install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
    install = subprocess.run(
        [*pip_install, "--target", str(tmp_path / "site"), str(whl)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    ask = "import opslib.records.header as h; print(h.__file__); print(h.repo_revision())"
    done = subprocess.run(
        [sys.executable, "-c", ask],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
    )
    assert done.returncode == 0, done.stderr
    where, revision = done.stdout.split()
    assert Path(where).is_relative_to(tmp_path / "site")
    assert revision in (before, after)  # the checkout's HEAD (-dirty: tracked files changed)
