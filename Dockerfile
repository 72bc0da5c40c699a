# syntax=docker/dockerfile:1
# campusbite-notify container image (the last stage; `--target loadgen`
# builds the load generator's image for `helm test`).
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

# The load generator image, what the Helm chart's `helm test` Pod runs (the
# gateway image does not carry it):
#   docker build --target loadgen -t campusbite-notify-loadgen .
FROM rust:1.89-bookworm AS loadgen-builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p campusbite-loadgen --bin campusbite-loadgen \
 && install -D -m 0755 target/release/campusbite-loadgen /out/campusbite-loadgen

FROM gcr.io/distroless/cc-debian12:nonroot AS loadgen
LABEL org.opencontainers.image.title="campusbite-notify-loadgen" \
      org.opencontainers.image.description="Load generator and delivery check for campusbite-notify (helm test)" \
      org.opencontainers.image.licenses="MIT"
COPY --from=loadgen-builder /out/campusbite-loadgen /usr/local/bin/campusbite-loadgen
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/campusbite-loadgen"]

# Run stage (the default target, last): glibc + libgcc + CA certificates, no shell, no package manager,
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
