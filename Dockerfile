# syntax=docker/dockerfile:1
#
# iam-key-exporter container image.
#
#   docker build --build-arg IKE_REVISION="$(git rev-parse --short=12 HEAD)" -t iam-key-exporter .
#   docker run --rm -p 9871:9871 \
#     -v "$PWD/config.yaml:/etc/iam-key-exporter/config.yaml:ro" \
#     -e AWS_REGION=us-east-1 iam-key-exporter
#
# AWS credentials come from the SDK default chain (env, profile, web identity /
# IRSA, ECS, IMDS); nothing is baked into the image.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# ---------------------------------------------------------------------------
# Build stage
# ---------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder

WORKDIR /src

# .git is not in the build context, so the revision for iam_key_exporter_build_info is
# passed in (build.rs reads it).
ARG IKE_REVISION=unknown
ENV IKE_REVISION=${IKE_REVISION}

# The whole crate (see .dockerignore): Cargo.toml, Cargo.lock, src/ and any
# build script or target the manifest may declare.
COPY . .

# --locked: build exactly what Cargo.lock pins, fail if it is out of date.
# The cache mounts keep the registry and target/ between builds (BuildKit);
# the binary is copied out of the cached target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
 && install -D -m 0755 target/release/iam-key-exporter /out/iam-key-exporter

# ---------------------------------------------------------------------------
# Runtime stage: glibc + libgcc + CA certificates, no shell, non-root (65532)
# ---------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}

LABEL org.opencontainers.image.title="iam-key-exporter" \
      org.opencontainers.image.description="Prometheus exporter for AWS IAM access key age and usage across many accounts" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/iam-key-exporter/iam-key-exporter"

COPY --from=builder /out/iam-key-exporter /usr/local/bin/iam-key-exporter

# Numeric user so Kubernetes can verify runAsNonRoot.
USER 65532:65532

EXPOSE 9871

ENTRYPOINT ["/usr/local/bin/iam-key-exporter"]
CMD ["--config.file=/etc/iam-key-exporter/config.yaml"]
