#!/usr/bin/env bash
# Write constraints.txt: the exact versions of every package in .venv, which the suite has
# just passed with. scripts/setup.sh installs with it, so a new machine gets the same set.
# Upgrade: remove .venv, run scripts/setup.sh test with CONSTRAINTS=none (newest allowed by
# pyproject.toml), run ./scripts/test, then this script, and commit constraints.txt.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
{
  echo "# The versions ./scripts/test passed with (scripts/constraints.sh writes this file)."
  .venv/bin/python -m pip freeze --exclude-editable \
    | sed -E 's|^zeroc-ice @ .*|zeroc-ice==3.6.5|' \
    | grep -v -E '^(pip|setuptools|wheel)=='
} >constraints.txt
echo "constraints.txt: $(grep -c '==' constraints.txt) packages pinned"
