#!/bin/sh
# The container's entrypoint: run codex-as-api with the given arguments (none: serve).
#
# Publishing a port (-p) needs the server on 0.0.0.0, which codex-as-api only accepts with an
# API key (anyone who reaches the port could otherwise spend the ChatGPT subscription). So:
# with CODEX_AS_API_API_KEY set, bind 0.0.0.0; without it, keep the server's own default
# (127.0.0.1: reachable only from inside the container) and say why. An explicit
# CODEX_AS_API_HOST or --host wins either way (and the server still refuses a non-loopback
# bind without a key unless --insecure-no-auth).
set -eu
if [ -z "${CODEX_AS_API_HOST:-}" ]; then
    if [ -n "${CODEX_AS_API_API_KEY:-}" ]; then
        export CODEX_AS_API_HOST=0.0.0.0
    else
        case "${1:-serve}" in
            -*|serve)
                echo "docker-entrypoint: CODEX_AS_API_API_KEY is not set, so the server listens on 127.0.0.1 inside the container only (not reachable through -p). Set CODEX_AS_API_API_KEY to serve on 0.0.0.0." >&2
                ;;
        esac
    fi
fi
exec /usr/local/bin/codex-as-api "$@"
