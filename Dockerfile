# syntax=docker/dockerfile:1
# One image with both jetflow binaries: jetflow-operator (the chart's Deployment runs it) and
# jetflow-worker (the operator's worker Deployments run it). Build from the repository root:
#
#   docker build -t ghcr.io/jetflow-io/jetflow:dev .
#
# The runtime image is distroless (glibc, CA certificates, no shell), runs as the non-root
# user 65532, and needs no writable path: both binaries keep their state in Kubernetes
# (ConfigMaps) or NATS, so the pod can run with readOnlyRootFilesystem: true.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
# The whole workspace (every member must be present for cargo to resolve it); .dockerignore
# keeps target/, .tools/ and git out of the context. The cache mounts keep the registry and
# the build directory between builds.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p jetflow-operator -p jetflow-worker \
 && mkdir -p /out \
 && cp target/release/jetflow-operator target/release/jetflow-worker /out/

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.source="https://github.com/jetflow-io/jetflow" \
      org.opencontainers.image.description="jetflow operator and worker" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/jetflow-operator /out/jetflow-worker /usr/local/bin/
# distroless's nonroot user; the chart's securityContext sets the same uid and gid.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/jetflow-operator"]
