#!/usr/bin/env bash
# Build the zeroc-ice 3.6.5 wheel that omero-py needs, patched for Python >= 3.11, once.
# The wheel is cached outside the tree (PORTER_CACHE, default ~/.cache/omero-porter) and reused.
# Prints the path of the wheel on stdout; everything else goes to stderr.
set -euo pipefail

python=${1:-python3}
cache=${PORTER_CACHE:-$HOME/.cache/omero-porter}/wheels
tag=$("$python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
mkdir -p "$cache"

existing=$(ls "$cache"/zeroc_ice-3.6.5-"$tag"-*.whl 2>/dev/null | head -n 1 || true)
if [ -n "$existing" ]; then
  echo "$existing"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log="$cache/zeroc-ice-build.log"
fail() {
  echo "ice_wheel: $1" >&2
  echo "ice_wheel: build log: $log" >&2
  echo "ice_wheel: to retry, fix the cause and run: bash scripts/ice_wheel.sh $python" >&2
  exit 1
}

echo "ice_wheel: building zeroc-ice 3.6.5 for $tag (about 5 minutes on 2 cores, done once)" >&2
"$python" -m pip download --quiet --no-deps --no-binary :all: zeroc-ice==3.6.5 -d "$work" >"$log" 2>&1 \
  || fail "could not download the zeroc-ice 3.6.5 sdist"
tar -xzf "$work"/zeroc-ice-3.6.5.tar.gz -C "$work" || fail "could not unpack the sdist"
src="$work/zeroc-ice-3.6.5"

# Patch 1: eval.h is gone in Python 3.11 and nothing in Slice.cpp needs it.
sed -i 's|^#include <eval.h>|/* eval.h removed for Python >= 3.11 */|' "$src/src/Slice.cpp"
# Patch 2: PyThreadState->frame is private in 3.11; use the public frame API.
"$python" - "$src/src/Util.cpp" <<'PY' || fail "could not patch src/Util.cpp"
import sys
path = sys.argv[1]
text = open(path).read()
old = """    PyFrameObject *f = PyThreadState_GET()->frame;
    PyObjectHandle code = PyObject_GetAttrString(reinterpret_cast<PyObject*>(f), STRCAST("f_code"));
    assert(code.get());"""
new = """    PyFrameObject *f = PyEval_GetFrame();
    PyObjectHandle code = reinterpret_cast<PyObject*>(PyFrame_GetCode(f));
    assert(code.get());"""
if old not in text:
    sys.exit("Util.cpp does not hold the expected PyThreadState_GET()->frame code")
open(path, "w").write(text.replace(old, new))
PY
grep -q "eval.h removed" "$src/src/Slice.cpp" || fail "could not patch src/Slice.cpp"

MAKEFLAGS=-j$(nproc) "$python" -m pip wheel --no-deps --no-build-isolation -w "$work/dist" "$src" >>"$log" 2>&1 \
  || fail "compiling zeroc-ice failed (is g++ installed? apt-get install g++ libssl-dev libbz2-dev)"
built=$(ls "$work"/dist/zeroc_ice-3.6.5-*.whl 2>/dev/null | head -n 1)
[ -n "$built" ] || fail "pip wheel finished but left no wheel"
cp "$built" "$cache/"
echo "$cache/$(basename "$built")"
