#!/usr/bin/env bash
# The Python package end to end: build the wheel with maturin, install it with --no-index
# into a fresh venv, run pytest against the installed package (its `codex-as-api emulator`
# and CLI), then build once more from the sdist and install and import that wheel.
#
# Needs python3 (>= 3.10) with venv, cargo, and PyPI for maturin and pytest. Build outputs
# share the repository's target/ (profile `dist`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
export CARGO_PROFILE_DEV_DEBUG=0
export PIP_DISABLE_PIP_VERSION_CHECK=1
python="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
t0=$(date +%s)
stamp() { echo "-- $1: $(( $(date +%s) - t0 )) s"; t0=$(date +%s); }

echo "== build venv (maturin from PyPI)"
"$python" -m venv "$tmp/build"
"$tmp/build/bin/pip" install -q "maturin>=1.9,<2"
stamp "build venv"

echo "== maturin build --profile dist"
"$tmp/build/bin/maturin" build --profile dist -m "$here/Cargo.toml" -o "$tmp/wheels"
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
# Unpacked by hand and touched: with sources newer than target/'s artifacts, cargo compiles
# the two crates from the sdist's own files (a missing file fails here); only the registry
# dependencies are reused.
mkdir "$tmp/sdist-src"
tar xzf "$tmp"/sdist/codex_as_api-*.tar.gz -C "$tmp/sdist-src"
find "$tmp/sdist-src" -name '*.rs' -exec touch {} +
MATURIN_PEP517_ARGS="--profile dist" "$tmp/build/bin/pip" wheel -q --no-deps --no-index \
  --find-links "$tmp/backend" -w "$tmp/sdist-wheels" "$tmp"/sdist-src/codex_as_api-*/
"$python" -m venv "$tmp/venv2"
"$tmp/venv2/bin/pip" install -q --no-index --find-links "$tmp/sdist-wheels" codex-as-api
mkdir "$tmp/home"
(cd "$tmp" && CODEX_HOME="$tmp/home" "$tmp/venv2/bin/python" - "$tmp/venv2" <<'PY'
import sys
from pathlib import Path

import codex_as_api
from codex_as_api import ChatGPTOAuthProvider

assert Path(codex_as_api.__file__).resolve().is_relative_to(Path(sys.argv[1]).resolve()), codex_as_api.__file__
answer = ChatGPTOAuthProvider(demo=True).chat("hello")
assert answer.content and answer.finish_reason == "stop", answer
print(f"sdist wheel {codex_as_api.__version__}: chat answered {answer.content[:40]!r}")
PY
)
"$tmp/venv2/bin/codex-as-api" --version
stamp "sdist build + check"
echo "== python package OK"
