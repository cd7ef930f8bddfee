# syntax=docker/dockerfile:1
# The operator image: a release build of `homelab-operator` on distroless, running as non-root.
#   docker build -t ghcr.io/homelab-operator/homelab-operator:0.1.0 .
# Needs BuildKit (cache mounts). Build context: the repository root (see .dockerignore).
#
# The binary links glibc (aws-lc-sys, the Azure SDK's TLS, is built with cmake and a C compiler),
# so the runtime is distroless `cc` (glibc, libgcc, CA certificates, no shell), user 65532.

ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Every workspace member's manifest is needed to resolve the workspace; only the operator and its
# dependencies are compiled.
COPY Cargo.toml Cargo.lock clippy.toml ./
COPY crates ./crates
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p homelab-operator --bin homelab-operator \
 && install -D -m 0755 target/release/homelab-operator /out/homelab-operator

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="homelab-operator" \
      org.opencontainers.image.source="https://github.com/homelab-operator/homelab-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/homelab-operator /homelab-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/homelab-operator"]
CMD ["run"]
