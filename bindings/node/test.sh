#!/usr/bin/env bash
# The npm packages, end to end: build the addon (`cargo build --profile $BINDINGS_PROFILE`,
# default dist; the .so copied as codex-as-api.linux-x64-gnu.node, as `napi build --platform`
# names it, without debug info), `npm pack` the
# main package and the linux-x64-gnu one, install both into a fresh directory (express comes
# from the registry), then from there: the installed launcher (`npx --no-install
# codex-as-api --version`, the emulator it starts), the published types under tsc, the
# library and createApp() under `node --test`, and the launcher's message when the platform
# package is missing (a second directory with the main package alone).
#
# Why not `napi build`: here it rebuilt the addon on every run (its type-definition pass
# forces a build of the crate; ten minutes of LTO on this machine), and index.d.ts is
# hand-written, so plain cargo does the same job.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
# The tools, from npm, pinned: tsc checks the published types.
tool_packages="typescript@5.9.3 @types/node@20.19.43"
platform=linux-x64-gnu
profile="${BINDINGS_PROFILE:-dist}"
t0=$(date +%s)
lap=$t0
timing() {
  local now
  now=$(date +%s)
  echo "-- $1: $((now - lap)) s (total $((now - t0)) s)"
  lap=$now
}

if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ] || ldd --version 2>&1 | grep -qi musl; then
  echo "bindings/node/test.sh packs the $platform package: run it on x86_64 Linux with glibc" >&2
  exit 1
fi

# Variables the library reads would leak into the tests.
while IFS= read -r var; do unset "$var"; done < <(env | grep -o '^CODEX_AS_API_[A-Z0-9_]*' || true)

echo "== tools from npm: $tool_packages"
tools="$target/node-tools"
if [ "$(cat "$tools/.installed" 2>/dev/null)" != "$tool_packages" ]; then
  rm -rf "$tools"
  mkdir -p "$tools"
  echo '{"private": true}' >"$tools/package.json"
  # shellcheck disable=SC2086 # one word per package
  npm install --prefix "$tools" --no-audit --no-fund --loglevel=error $tool_packages
  echo "$tool_packages" >"$tools/.installed"
fi
timing "tools"

echo "== build the addon (cargo build --profile $profile -p codex-as-api-node)"
(cd "$root" && CARGO_TARGET_DIR="$target" cargo build --locked --profile "$profile" -p codex-as-api-node)
out="$target/node-addon"
rm -rf "$out"
mkdir -p "$out"
addon="$out/codex-as-api.$platform.node"
if [ "$profile" = dev ]; then built="$target/debug"; else built="$target/$profile"; fi
cp "$built/libcodex_as_api_node.so" "$addon"
# The dev profile keeps debug info: hundreds of MB the package does not need.
strip --strip-debug "$addon"
ls -l "$addon"
timing "build"

work="$(mktemp -d)"
emu_pid=""
cleanup() {
  if [ -n "$emu_pid" ]; then
    kill -KILL -- "-$emu_pid" 2>/dev/null || true
    wait "$emu_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "== npm pack: codex-as-api and @codex-as-api/$platform"
cp -r "$here/npm/$platform" "$work/platform-package"
cp "$addon" "$work/platform-package/"
(cd "$here" && npm pack --silent --pack-destination "$work" >/dev/null)
(cd "$work/platform-package" && npm pack --silent --pack-destination "$work" >/dev/null)
main_tgz="$(ls "$work"/codex-as-api-[0-9]*.tgz)"
platform_tgz="$(ls "$work"/codex-as-api-"$platform"-*.tgz)"
tar tzf "$main_tgz" | sort
tar tzf "$platform_tgz" | sort

echo "== npm install both tarballs into a fresh directory"
inst="$work/install"
mkdir -p "$inst"
echo '{"name": "codex-as-api-install-test", "private": true}' >"$inst/package.json"
(cd "$inst" && npm install --no-audit --no-fund --loglevel=error "$main_tgz" "$platform_tgz")
echo "== npm install the main tarball alone (--omit=optional)"
bare="$work/bare"
mkdir -p "$bare"
echo '{"name": "codex-as-api-bare-test", "private": true}' >"$bare/package.json"
(cd "$bare" && npm install --no-audit --no-fund --loglevel=error --omit=optional "$main_tgz")
test ! -e "$bare/node_modules/@codex-as-api/$platform"
timing "pack and install"

echo "== npx --no-install codex-as-api --version"
(cd "$inst" && npx --no-install codex-as-api --version)

echo "== the emulator, started by the installed launcher"
mkdir -p "$work/codex-home"
mkfifo "$work/emulator.out"
(cd "$inst" && exec setsid npx --no-install codex-as-api emulator \
  --auth-out "$work/auth.json" >"$work/emulator.out" 2>"$work/emulator.log") &
emu_pid=$!
exec 3<"$work/emulator.out"
upstream=""
token=""
while [ -z "$upstream" ] || [ -z "$token" ]; do
  if ! IFS= read -r -t 120 -u 3 line; then
    echo "the emulator printed no URLs:" >&2
    cat "$work/emulator.log" >&2
    exit 1
  fi
  case "$line" in
    CODEX_AS_API_UPSTREAM_URL=*) upstream="${line#*=}" ;;
    CODEX_AS_API_TOKEN_URL=*) token="${line#*=}" ;;
  esac
done
echo "upstream $upstream, token endpoint $token"
test -s "$work/auth.json"

mkdir -p "$inst/test"
cp "$here"/test/*.mjs "$here"/test/*.cjs "$here"/test/*.mts "$here"/test/*.cts "$here"/test/tsconfig.json "$inst/test/"
echo "== tsc: the published types, for ES module and CommonJS consumers"
ln -s "$tools/node_modules/@types" "$inst/node_modules/@types"
(cd "$inst/test" && "$tools/node_modules/.bin/tsc" -p tsconfig.json)

echo "== node --test (from the install directory)"
(
  cd "$inst"
  CODEX_AS_API_TEST_UPSTREAM_URL="$upstream" \
    CODEX_AS_API_TEST_TOKEN_URL="$token" \
    CODEX_AS_API_TEST_AUTH="$work/auth.json" \
    CODEX_AS_API_TEST_INSTALL_DIR="$inst" \
    CODEX_AS_API_TEST_BARE_DIR="$bare" \
    CODEX_HOME="$work/codex-home" \
    node --test test/*.test.mjs test/*.test.cjs
)
timing "tests"

echo "== the emulator (npx and the launcher) stops on Ctrl-C"
kill -INT -- "-$emu_pid"
if ! timeout 30 tail --pid="$emu_pid" -f /dev/null; then
  echo "the emulator did not stop within 30 s of SIGINT" >&2
  kill -KILL -- "-$emu_pid"
  exit 1
fi
status=0
wait "$emu_pid" || status=$?
emu_pid=""
# npm exec reports an interrupted command as 130; the launcher itself exits 0.
if [ "$status" != 0 ] && [ "$status" != 130 ]; then
  echo "the emulator exited with status $status after SIGINT" >&2
  cat "$work/emulator.log" >&2
  exit 1
fi
echo "== bindings/node/test.sh passed in $(($(date +%s) - t0)) s"
