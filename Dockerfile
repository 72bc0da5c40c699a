# syntax=docker/dockerfile:1
# campusbite-notify container image.
#   docker build -t campusbite-notify .
#   docker run --rm -p 8080:8080 -e NOTIFY_JWT_SECRET=... campusbite-notify
# Build stage: release build with the locked dependency set.
FROM rust:1.89-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and the target directory between
# builds (BuildKit); the binary is copied out of the cached target dir.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p campusbite-notify --bin campusbite-notify \
 && install -D -m 0755 target/release/campusbite-notify /out/campusbite-notify

# Run stage: glibc + libgcc + CA certificates, no shell, no package manager,
# runs as the unprivileged "nonroot" user (uid/gid 65532).
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="campusbite-notify" \
      org.opencontainers.image.description="Real-time notification gateway: SSE to browsers, NATS JetStream backbone" \
      org.opencontainers.image.licenses="MIT"
COPY --from=builder /out/campusbite-notify /usr/local/bin/campusbite-notify
# The distroless "nonroot" user, given numerically so that Kubernetes'
# runAsNonRoot can verify it without a runAsUser in the pod spec.
USER 65532:65532
EXPOSE 8080
# Liveness: GET /healthz, readiness: GET /readyz (probed by Kubernetes; the
# image has no shell or curl for a Docker HEALTHCHECK).
ENTRYPOINT ["/usr/local/bin/campusbite-notify", "serve"]
