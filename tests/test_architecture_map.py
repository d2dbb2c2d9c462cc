"""docs/architecture.md's map names every module of porter's packages, and only modules that
exist: a rename or a new module without its line fails here."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("proxy", "auth", "filters", "mailer", "cache")


def mapped() -> set[str]:
    """The module paths the map's code block names (folder lines set where the next go)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("```\n", 2)[1]
    found: set[str] = set()
    folder = ""
    for line in block.splitlines():
        if match := re.match(r"^(\S+/)\s", line):
            folder = match.group(1)
        elif match := re.match(r"^(\S+\.py)\s", line):
            found.add(match.group(1))
        elif match := re.match(r"^\s+(\S+\.py)\s", line):
            found.add(folder + match.group(1))
    return found


def test_the_map_names_only_modules_that_exist() -> None:
    names = mapped()
    assert len(names) > 100  # the block was read (a broken parse would pass vacuously)
    assert sorted(n for n in names if not (ROOT / n).is_file()) == []


def test_every_module_of_porters_packages_is_on_the_map() -> None:
    modules = {
        str(path.relative_to(ROOT))
        for folder in FOLDERS
        for path in (ROOT / folder).rglob("*.py")
        if path.name != "__init__.py"
    }
    modules |= {"run.py", "porter_errors.py"}
    assert sorted(modules - mapped()) == []
