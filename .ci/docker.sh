#!/usr/bin/env bash
# The Dockerfile's check: build the image and run it with --demo, where a container runtime
# works (docker, else podman: `info` must succeed); elsewhere say so and skip.
set -euo pipefail
cd "$(dirname "$0")/.."

runtime=""
for c in ${CONTAINER_RUNTIME:-docker podman}; do
  if command -v "$c" >/dev/null 2>&1 && "$c" info >/dev/null 2>&1; then runtime="$c"; break; fi
done
if [ -z "$runtime" ]; then
  why="no docker or podman on PATH"
  if command -v docker >/dev/null 2>&1; then
    why="$( (docker info 2>&1 || true) | grep -m1 -iE 'cannot|error|permission' || true)"
    why="docker info failed: ${why:-no daemon}"
  fi
  echo "SKIPPED: Docker image check, no working container runtime here ($why)."
  exit 0
fi

image="codex-as-api:ci-$$"
name="codex-as-api-ci-$$"
cleanup() {
  "$runtime" rm -f "$name" "$name-nokey" >/dev/null 2>&1 || true
  "$runtime" rmi -f "$image" >/dev/null 2>&1 || true
}
trap cleanup EXIT

t0=$(date +%s)
echo "-- $runtime build -t $image ."
"$runtime" build -t "$image" .
echo "-- image built in $(( $(date +%s) - t0 )) s"

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
got="$("$runtime" run --rm "$image" --version)"
[ "$got" = "codex-as-api $version" ] || { echo "--version: got '$got', want 'codex-as-api $version'"; exit 1; }
uid="$("$runtime" run --rm --entrypoint id "$image" -u)"
[ "$uid" != 0 ] || { echo "the image runs as root"; exit 1; }
"$runtime" image inspect "$image" --format '{{json .Config.Volumes}} {{json .Config.ExposedPorts}}' \
  | grep -q '/data/codex' || { echo "CODEX_HOME /data/codex is not a volume"; exit 1; }

# With a key: 0.0.0.0, reachable through the published port.
"$runtime" run -d --name "$name" -p 127.0.0.1::18080 -e CODEX_AS_API_API_KEY=ci-key "$image" --demo >/dev/null
port="$("$runtime" port "$name" 18080/tcp | head -n1 | sed 's/.*://')"
ok=""
for _ in $(seq 1 50); do
  if body="$(curl -fsS "http://127.0.0.1:$port/health" 2>/dev/null)"; then ok=1; break; fi
  sleep 0.2
done
[ -n "$ok" ] || { "$runtime" logs "$name"; echo "/health did not answer on port $port"; exit 1; }
echo "/health: $body"
echo "$body" | grep -Eq '"status": ?"ok"' || { echo "unexpected /health body"; exit 1; }
curl -fsS -H 'Authorization: Bearer ci-key' -H 'Content-Type: application/json' \
  -d '{"model":"gpt-5.5","messages":[{"role":"user","content":"hi"}]}' \
  "http://127.0.0.1:$port/v1/chat/completions" | grep -q '"choices"' \
  || { echo "chat completion through the container failed"; exit 1; }

# Without a key: the server stays on 127.0.0.1 inside the container and the entrypoint says why.
"$runtime" run -d --name "$name-nokey" "$image" --demo >/dev/null
sleep 2
logs="$("$runtime" logs "$name-nokey" 2>&1)"
echo "$logs" | grep -q 'CODEX_AS_API_API_KEY is not set' || { echo "$logs"; echo "no entrypoint notice without a key"; exit 1; }
echo "$logs" | grep -q '127.0.0.1' || { echo "$logs"; echo "not bound to 127.0.0.1 without a key"; exit 1; }
echo "Docker image check passed in $(( $(date +%s) - t0 )) s"
