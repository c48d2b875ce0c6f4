#!/usr/bin/env bash
# The test command: sets up what the end-to-end suites need (idempotent), then runs every
# test: unit, integration (real server + emulator over loopback), the official OpenAI and
# Anthropic Python SDKs, the real Claude Code CLI, fuzz seed replay and bench smoke runs.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

venv="$root/.venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import openai, anthropic, pytest, websockets' 2>/dev/null; then
  echo "== setting up the Python venv for the SDK tests ($venv)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt
fi
export CODEX_AS_API_TEST_PYTHON="$venv/bin/python"

node_dir="$root/tests/e2e/node"
if [ ! -x "$node_dir/node_modules/.bin/claude" ] || [ ! -x "$node_dir/node_modules/.bin/codex" ]; then
  echo "== installing Claude Code and the Codex CLI for the end-to-end tests ($node_dir)"
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi
export CODEX_AS_API_TEST_CLAUDE="$node_dir/node_modules/.bin/claude"
export CODEX_AS_API_TEST_CODEX="$node_dir/node_modules/.bin/codex"

echo "== cargo test (all targets, benches run once as smoke tests)"
cargo test --all-targets "$@"
echo "== doc tests (the library examples)"
cargo test --doc
