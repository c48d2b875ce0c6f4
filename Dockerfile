# syntax=docker/dockerfile:1
#
# codex-as-api in a container: the Rust build on Debian bookworm, the binary on
# debian:bookworm-slim as an unprivileged user.
#
#   docker build -t codex-as-api .
#   docker run --rm -it -v codex-as-api:/data/codex codex-as-api login --device
#   docker run -d -p 127.0.0.1:18080:18080 -e CODEX_AS_API_API_KEY=change-me \
#       -v codex-as-api:/data/codex codex-as-api
#
# The server binds 0.0.0.0 (reachable through -p) only when CODEX_AS_API_API_KEY is set;
# without a key it stays on 127.0.0.1 inside the container (see docker/entrypoint.sh).

ARG RUST_VERSION=1
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# BuildKit cache mounts keep the registry and the dependencies' build between image builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --profile dist --package codex-as-api --bin codex-as-api \
    && install -m 0755 target/dist/codex-as-api /usr/local/bin/codex-as-api \
    && /usr/local/bin/codex-as-api --version

FROM debian:bookworm-slim AS runtime
# TLS roots are compiled in (webpki-roots): no ca-certificates package is needed.
RUN groupadd --system --gid 10001 codex \
    && useradd --system --uid 10001 --gid codex --home-dir /data --shell /usr/sbin/nologin codex \
    && mkdir -p /data/codex \
    && chown -R codex:codex /data
COPY --from=build /usr/local/bin/codex-as-api /usr/local/bin/codex-as-api
COPY docker/entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV CODEX_HOME=/data/codex \
    CODEX_AS_API_PORT=18080 \
    HOME=/data
VOLUME ["/data/codex"]
EXPOSE 18080
USER codex:codex
WORKDIR /data
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD []
