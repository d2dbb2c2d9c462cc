#!/usr/bin/env bash
# Install what porter needs, idempotently: system packages, a virtualenv in .venv, the patched
# zeroc-ice wheel (built once, cached outside the tree), porter and its Python packages.
#   scripts/setup.sh run    what the gateway needs
#   scripts/setup.sh demo   plus omero-web, for `run.py demo`
#   scripts/setup.sh test   plus what the tests need (redis-server, aiosmtpd, omero-web, ...)
set -euo pipefail

mode=${1:-run}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
python=${PYTHON:-python3}

say() { echo "setup: $*" >&2; }

# Run a command with its output kept in a log, shown only when it fails.
quiet() {
  local log
  log=$(mktemp)
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    say "failed: $*"
    exit 1
  fi
  rm -f "$log"
}

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  say "installing system packages: ${missing[*]}"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

# g++ and the headers zeroc-ice compiles against (only used when the wheel is not cached yet).
build_packages=(g++ libssl-dev libbz2-dev)
test_packages=(redis-server chromium nginx-light)

case "$mode" in
  run|demo) apt_install "${build_packages[@]}" ;;
  test) apt_install "${build_packages[@]}" "${test_packages[@]}" ;;
  *) echo "usage: scripts/setup.sh run|demo|test" >&2; exit 2 ;;
esac

# The tests' OpenID provider (panva's oidc-provider on Node), pinned by its lockfile.
if [ "$mode" = test ]; then
  command -v npm >/dev/null || apt_install nodejs npm
  oidc=tests/oidc_provider
  lock=$(sha256sum "$oidc/package-lock.json" | cut -d' ' -f1)
  if [ "$(cat "$oidc/node_modules/.porter-lock" 2>/dev/null)" != "$lock" ]; then
    say "installing the test OpenID provider (npm ci)"
    (cd "$oidc" && quiet npm ci --no-audit --no-fund --cache "$HOME/.cache/omero-porter/npm")
    echo "$lock" >"$oidc/node_modules/.porter-lock"
  fi
fi

if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($python --version)"
  $python -m venv .venv
fi
venv_python=.venv/bin/python

stamp=.venv/.porter-installed-$mode
# The versions the suite passed with (scripts/constraints.sh); CONSTRAINTS=none: the newest
# pyproject.toml allows, to upgrade them.
constraints=(-c constraints.txt)
[ "${CONSTRAINTS:-}" = none ] && constraints=()
want=$(cat pyproject.toml constraints.txt scripts/setup.sh scripts/ice_wheel.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
# what the gateway needs is part of what the demo and the tests need: installed already
if [ "$mode" = run ]; then
  for wider in demo test; do
    [ "$(cat ".venv/.porter-installed-$wider" 2>/dev/null)" = "$want" ] && exit 0
  done
fi

quiet $venv_python -m pip install --upgrade pip setuptools wheel
wheel=$(bash scripts/ice_wheel.sh "$venv_python")
extras=""
[ "$mode" = test ] && extras="[test]"
[ "$mode" = demo ] && extras="[demo]"
say "installing porter$extras and its packages"
quiet $venv_python -m pip install "${constraints[@]}" "$wheel" -e ".$extras"
$venv_python -c "import aiohttp, Ice, omero, jwt, cachetools, aiosmtplib" \
  || { say "the installed packages do not import; remove .venv and run again"; exit 1; }
echo "$want" >"$stamp"
