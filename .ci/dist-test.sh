#!/usr/bin/env bash
# The prebuilt archives (cargo-dist, dist-workspace.toml):
#   1. install the pinned cargo-dist when it is missing (its PyPI wheel, else `cargo install`);
#   2. `dist plan` (the config, the targets and the generated release workflow are in sync);
#   3. build the x86_64 Linux archive (the `dist` profile) with its checksum and installers;
#   4. serve them over local HTTP and run the shell installer from there
#      (CODEX_AS_API_DOWNLOAD_URL) into a temporary HOME, then the installed binary's
#      --version against the crate's version.
# Each step's time is printed. The real HOME's shell profiles are checked to be untouched.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

elapsed() { echo "$(( $(date +%s) - $1 )) s"; }
target=x86_64-unknown-linux-gnu
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
dist_version="$(sed -n 's/^cargo-dist-version = "\(.*\)"/\1/p' dist-workspace.toml)"
[ -n "$version" ] && [ -n "$dist_version" ] || { echo "cannot read the versions"; exit 1; }

# 1. cargo-dist itself (its binary is `dist`): the PyPI wheel of that version (seconds),
#    else `cargo install` (several minutes).
t=$(date +%s)
if ! { command -v dist >/dev/null && [ "$(dist --version)" = "cargo-dist $dist_version" ]; }; then
  tool="$PWD/target/dist-tool"
  if [ ! -x "$tool/bin/dist" ] || [ "$("$tool/bin/dist" --version)" != "cargo-dist $dist_version" ]; then
    echo "-- installing cargo-dist $dist_version (PyPI: astral-dev-toolchain-cargo-dist)"
    rm -rf "$tool"
    if ! { python3 -m venv "$tool" &&
        "$tool/bin/pip" install -q --disable-pip-version-check \
          "astral-dev-toolchain-cargo-dist==$dist_version"; }; then
      echo "-- no wheel: cargo install cargo-dist $dist_version --locked"
      cargo install cargo-dist --version "=$dist_version" --locked --root "$tool"
    fi
  fi
  export PATH="$tool/bin:$PATH"
fi
echo "-- cargo-dist ready ($(dist --version)) in $(elapsed "$t")"

# 2. The plan.
t=$(date +%s)
plan="$(mktemp)"
dist plan --output-format=json >"$plan" 2>/dev/null || { dist plan; exit 1; }
dist plan
python3 - "$plan" "$version" <<'PY'
import json, sys
plan = json.load(open(sys.argv[1]))
version = sys.argv[2]
names = set(plan["artifacts"])
want = {f"codex-as-api-{t}.{ext}" for t, ext in [
    ("x86_64-unknown-linux-gnu", "tar.xz"), ("aarch64-unknown-linux-gnu", "tar.xz"),
    ("x86_64-unknown-linux-musl", "tar.xz"), ("x86_64-apple-darwin", "tar.xz"),
    ("aarch64-apple-darwin", "tar.xz"), ("x86_64-pc-windows-msvc", "zip")]}
want |= {n + ".sha256" for n in want}
want |= {"codex-as-api-installer.sh", "codex-as-api-installer.ps1", "codex-as-api.rb"}
missing = sorted(want - names)
assert not missing, f"dist plan lacks {missing}"
apps = [(r["app_name"], r["app_version"]) for r in plan["releases"]]
assert apps == [("codex-as-api", version)], f"releases: {apps}"
print(f"plan: {len(names)} artifacts for codex-as-api {version}, all expected ones present")
PY
rm -f "$plan"
echo "-- dist plan in $(elapsed "$t")"

# 3. The Linux archive, its checksum and the installers.
t=$(date +%s)
rm -rf target/distrib
dist build --artifacts=all --target "$target" --output-format=human
out=target/distrib
archive="codex-as-api-$target.tar.xz"
for f in "$archive" "$archive.sha256" codex-as-api-installer.sh; do
  [ -s "$out/$f" ] || { ls -la "$out"; echo "dist build did not produce $f"; exit 1; }
done
(cd "$out" && sha256sum -c "$archive.sha256")
echo "-- archive built in $(elapsed "$t") ($(du -h "$out/$archive" | cut -f1))"

# 4. The installer against a local HTTP server, into a temporary HOME.
t=$(date +%s)
tmp="$(mktemp -d)"
server_pid=""
cleanup() {
  [ -z "$server_pid" ] || kill "$server_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
python3 - "$out" "$tmp/port" >"$tmp/http.log" 2>&1 <<'PY' &
import functools, http.server, sys
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
with open(sys.argv[2] + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
import os; os.replace(sys.argv[2] + ".tmp", sys.argv[2])
srv.serve_forever()
PY
server_pid=$!
for _ in $(seq 1 100); do [ -s "$tmp/port" ] && break; sleep 0.1; done
[ -s "$tmp/port" ] || { cat "$tmp/http.log"; echo "the HTTP server did not start"; exit 1; }
url="http://127.0.0.1:$(cat "$tmp/port")"

profiles() { for f in .profile .bashrc .bash_profile .zshrc .zshenv .config/fish/conf.d; do
  [ -e "$HOME/$f" ] && { echo "$f"; cat "$HOME/$f" 2>/dev/null | sha256sum; }; done; true; }
before="$(profiles)"

check() {  # check BINARY: it runs and prints the crate's version
  [ -x "$1" ] || { echo "the installer did not put an executable at $1"; exit 1; }
  got="$("$1" --version)"
  [ "$got" = "codex-as-api $version" ] || { echo "$1 --version: got '$got', want 'codex-as-api $version'"; exit 1; }
  echo "installed $1: $got"
}

# The default: $CARGO_HOME/bin, else ~/.cargo/bin, and a PATH line in the (temporary) profiles.
mkdir -p "$tmp/home"
env -u CARGO_HOME HOME="$tmp/home" CODEX_AS_API_DOWNLOAD_URL="$url" \
  sh "$out/codex-as-api-installer.sh"
check "$tmp/home/.cargo/bin/codex-as-api"
grep -qs '.cargo/env' "$tmp/home/.profile" || { echo "no PATH line in the temporary ~/.profile"; exit 1; }

# CODEX_AS_API_INSTALL_DIR (its bin/) and CODEX_AS_API_NO_MODIFY_PATH: no profile touched.
mkdir -p "$tmp/home2"
HOME="$tmp/home2" CODEX_AS_API_DOWNLOAD_URL="$url" CODEX_AS_API_INSTALL_DIR="$tmp/prefix" \
  CODEX_AS_API_NO_MODIFY_PATH=1 sh "$out/codex-as-api-installer.sh" --quiet
check "$tmp/prefix/bin/codex-as-api"
[ ! -e "$tmp/home2/.profile" ] || { echo "CODEX_AS_API_NO_MODIFY_PATH=1 still wrote ~/.profile"; exit 1; }

# A corrupted archive is refused (the installer carries the checksum; --quiet would hide why).
cp -r "$out" "$tmp/bad"
printf 'x' >>"$tmp/bad/$archive"
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
python3 - "$tmp/bad" "$tmp/port2" >"$tmp/http2.log" 2>&1 <<'PY' &
import functools, http.server, sys, os
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
with open(sys.argv[2] + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
srv.serve_forever()
PY
server_pid=$!
for _ in $(seq 1 100); do [ -s "$tmp/port2" ] && break; sleep 0.1; done
mkdir -p "$tmp/home3"
if HOME="$tmp/home3" CODEX_AS_API_DOWNLOAD_URL="http://127.0.0.1:$(cat "$tmp/port2")" \
    CODEX_AS_API_INSTALL_DIR="$tmp/prefix3" CODEX_AS_API_NO_MODIFY_PATH=1 \
    sh "$out/codex-as-api-installer.sh" >"$tmp/bad.log" 2>&1; then
  cat "$tmp/bad.log"; echo "the installer accepted a corrupted archive"; exit 1
fi
grep -qi 'checksum' "$tmp/bad.log" || { cat "$tmp/bad.log"; echo "no checksum error for a corrupted archive"; exit 1; }
[ ! -e "$tmp/prefix3/bin/codex-as-api" ] || { echo "a corrupted archive was installed"; exit 1; }
echo "a corrupted archive is refused: $(grep -i -m1 checksum "$tmp/bad.log")"

[ "$(profiles)" = "$before" ] || { echo "the installer changed the real HOME's shell profiles"; exit 1; }
echo "-- installer tests in $(elapsed "$t")"
