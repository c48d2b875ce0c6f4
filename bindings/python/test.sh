#!/usr/bin/env bash
# The Python package end to end: build the wheel with maturin, install it with --no-index
# into a fresh venv, run pytest against the installed package (its `codex-as-api emulator`
# and CLI), then build it again from the sdist and run the same tests against that wheel.
#
# Needs python3 (>= 3.10) with venv, cargo, and PyPI for maturin and pytest. Build outputs
# share the repository's target/, in the cargo profile BINDINGS_PROFILE (default `dist`, as
# published; CI passes `dev`, which reuses the dependencies tests/run.sh built).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
profile="${BINDINGS_PROFILE:-dist}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
python="${PYTHON:-python3}"
# The READMEs whose Python examples tests/test_readme.py runs.
export CODEX_AS_API_README="$repo/README.md" CODEX_AS_API_PY_README="$here/README.md"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
t0=$(date +%s)
stamp() { echo "-- $1: $(( $(date +%s) - t0 )) s"; t0=$(date +%s); }

echo "== build venv (maturin from PyPI)"
"$python" -m venv "$tmp/build"
"$tmp/build/bin/pip" install -q "maturin>=1.9,<2"
stamp "build venv"

echo "== maturin build --profile $profile"
"$tmp/build/bin/maturin" build --profile "$profile" -m "$here/Cargo.toml" -o "$tmp/wheels"
ls "$tmp/wheels"
stamp "wheel"

echo "== fresh venv: pytest from PyPI, the wheel with --no-index"
"$python" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q pytest
"$tmp/venv/bin/pip" install -q --no-index --find-links "$tmp/wheels" codex-as-api
stamp "install"

echo "== pytest (outside the source tree, against the installed package)"
cp -r "$here/tests" "$tmp/tests"
(cd "$tmp" && "$tmp/venv/bin/python" -m pytest -p no:cacheprovider -v tests)
stamp "pytest"

echo "== sdist, then a wheel built from it (maturin from PyPI as the build backend)"
"$tmp/build/bin/maturin" sdist -m "$here/Cargo.toml" -o "$tmp/sdist"
"$tmp/build/bin/pip" download -q --only-binary :all: -d "$tmp/backend" "maturin>=1.9,<2"
# cargo runs on the sdist's own tree. Its fingerprints name every source file relative to the
# workspace root, so a file missing from the sdist makes the crate stale and its compile
# fails; unchanged files reuse target/'s artifacts (a full compile costs ~10 min here).
# PY_SDIST_FULL_REBUILD=1 touches the sources so both crates compile from the sdist anew.
mkdir "$tmp/sdist-src"
tar xzf "$tmp"/sdist/codex_as_api-*.tar.gz -C "$tmp/sdist-src"
if [ "${PY_SDIST_FULL_REBUILD:-0}" = 1 ]; then
  find "$tmp/sdist-src" -name '*.rs' -exec touch {} +
fi
MATURIN_PEP517_ARGS="--profile $profile" "$tmp/build/bin/pip" wheel -q --no-deps --no-index \
  --find-links "$tmp/backend" -w "$tmp/sdist-wheels" "$tmp"/sdist-src/codex_as_api-*/
"$python" -m venv "$tmp/venv2"
"$tmp/venv2/bin/pip" install -q pytest
"$tmp/venv2/bin/pip" install -q --no-index --find-links "$tmp/sdist-wheels" codex-as-api
(cd "$tmp" && "$tmp/venv2/bin/python" -m pytest -p no:cacheprovider -q tests)
stamp "sdist build + check"
echo "== python package OK"
