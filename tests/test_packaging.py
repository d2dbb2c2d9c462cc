"""What `pip install` gives: the versions the suite passed with, a command, a configuration."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
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


def _run(*argv: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_the_wheel_installs_a_command_that_writes_and_checks_its_configuration(
    tmp_path: Path,
) -> None:
    shutil.rmtree(ROOT / "build", ignore_errors=True)  # no stale files in the wheel
    built = _run(
        sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
        ROOT, "-w", tmp_path / "dist", cwd=tmp_path,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "dist").glob("omero_porter-*.whl")
    venv = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", venv, cwd=tmp_path).returncode == 0
    # its dependencies from the suite's environment (nothing downloaded); porter from the wheel
    [site] = (venv / "lib").glob("python*/site-packages")
    ours = [p for p in sys.path if p.endswith("site-packages")]
    (site / "dependencies.pth").write_text("\n".join(ours) + "\n")
    installed = _run(venv / "bin" / "pip", "install", "-q", "--no-deps", wheel, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    command = venv / "bin" / "omero-porter"
    site_dir = tmp_path / "site"
    site_dir.mkdir()

    written = _run(command, "init-config", "config.toml", cwd=site_dir)
    assert written.returncode == 0, written.stderr
    config = site_dir / "config.toml"
    assert config.read_text() == (ROOT / "config.toml").read_text()
    assert config.stat().st_mode & 0o777 == 0o640
    again = _run(command, "init-config", "config.toml", cwd=site_dir)
    assert again.returncode == 2
    assert "exists" in again.stderr

    checked = _run(command, "check", cwd=site_dir)  # ./config.toml, found without --config
    assert checked.returncode == 0, checked.stderr
    assert f"# {config}: configuration is valid" in checked.stdout
    elsewhere = _run(command, "--config", config, "check", cwd=tmp_path)
    assert elsewhere.returncode == 0, elsewhere.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    missing = _run(command, "check", cwd=empty)
    assert missing.returncode == 2
    assert f"looked for {empty / 'config.toml'}, /etc/omero-porter/config.toml" in missing.stderr
    assert "init-config" in missing.stderr

    demo = _run(command, "demo", cwd=empty)  # the test server lives in a checkout's tests/
    assert demo.returncode == 2
    assert "runs from a checkout" in demo.stderr

    where = _run(
        venv / "bin" / "python", "-c", "import proxy, run; print(proxy.__file__)", cwd=empty
    )
    assert where.stdout.startswith(str(site))  # the wheel's porter ran, not the checkout's
