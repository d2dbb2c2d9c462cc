"""What `pip install` gives: the versions the suite passed with, a command, a configuration."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_constraints_pin_every_dependency_at_the_version_installed() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    pinned = {
        _name(line): line.split("==", 1)[1].strip()
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    names = {_name(r) for r in wanted if "python_version < '3.11'" not in r}
    assert sorted(names - set(pinned)) == []  # each one pinned (scripts/constraints.sh)
    assert {n: pinned[n] for n in names} == {n: version(n) for n in names}
