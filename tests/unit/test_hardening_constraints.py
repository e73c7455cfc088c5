"""Reproducible installs: constraints.txt pins every dependency, ./dev installs with it.

The review found floors only in pyproject.toml and no lock, so known-vulnerable releases
(aiohttp 3.10.0-3.10.10, tqdm 4.66.0-4.66.2) stayed installable.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import REPO

VULNERABLE = {"aiohttp": SpecifierSet(">=3.10.0,<=3.10.10"),
              "tqdm": SpecifierSet(">=4.66.0,<=4.66.2")}


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def _requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        names.extend(extra)
    return [Requirement(r) for r in names]


def test_constraints_pin_every_dependency_of_pyproject_within_its_range() -> None:
    pins = _pins()
    for req in _requirements():
        name = canonicalize_name(req.name)
        if name == "torch":  # ./dev pins it (the CPU build), see the next test
            continue
        assert name in pins, f"constraints.txt does not pin {req.name}"
        assert pins[name] in req.specifier, f"{req.name}=={pins[name]} is outside {req}"


def test_torch_is_pinned_by_dev_and_no_gpu_wheel_is_in_the_constraints() -> None:
    assert 'TORCH="torch==2.13.0"' in (REPO / "dev").read_text()
    gpu = re.compile(r"^(torch|torchvision|triton|nvidia-.*)$")
    assert [name for name in _pins() if gpu.match(name)] == []


@pytest.mark.parametrize("package", sorted(VULNERABLE))
def test_no_known_vulnerable_release_is_pinned_or_allowed(package: str) -> None:
    assert _pins()[package] not in VULNERABLE[package]
    floor = next(r.specifier for r in _requirements() if canonicalize_name(r.name) == package)
    # every release the floor lets in is past the vulnerable range
    worst = max(Version(s.version) for s in VULNERABLE[package] if s.operator == "<=")
    assert worst not in floor and all(s.operator == ">=" and Version(s.version) > worst
                                      for s in floor)


def _fake_checkout(tmp: Path) -> tuple[Path, Path, Path]:
    """A copy of ./dev with pyproject.toml and constraints.txt, and a venv whose pip only
    records how it was called."""
    repo = tmp / "repo"
    repo.mkdir()
    for name in ("dev", "pyproject.toml", "constraints.txt"):
        shutil.copy2(REPO / name, repo / name)
    venv_bin = tmp / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    log = tmp / "pip.log"
    for tool, body in (("python", 'exec python3 "$@"'),
                       ("pip", f'echo "$*" >> "{log}"')):
        path = venv_bin / tool
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return repo, tmp / "venv", log


def _setup(repo: Path, venv: Path) -> None:
    env = {**os.environ, "RADBRIDGE_VENV": str(venv)}
    subprocess.run(["bash", str(repo / "dev"), "setup"], check=True, env=env,
                   capture_output=True, text=True)


def test_dev_setup_installs_with_the_constraints_and_again_when_they_change(
        tmp_path: Path) -> None:
    repo, venv, log = _fake_checkout(tmp_path)
    _setup(repo, venv)
    calls = log.read_text().splitlines()
    assert any("-c constraints.txt" in c and "-e .[inference,dev]" in c for c in calls)
    assert any("-c constraints.txt" in c and "torch==2.13.0" in c for c in calls)
    _setup(repo, venv)
    assert log.read_text().splitlines() == calls  # nothing changed: nothing installed
    with (repo / "constraints.txt").open("a") as f:
        f.write("# a refreshed lock\n")
    _setup(repo, venv)
    assert len(log.read_text().splitlines()) == 2 * len(calls)
    (repo / "pyproject.toml").write_text((repo / "pyproject.toml").read_text() + "\n")
    _setup(repo, venv)
    assert len(log.read_text().splitlines()) == 3 * len(calls)
