# syntax=docker/dockerfile:1
#
# iam-key-exporter container image: one static, stripped binary and the CA
# certificates on an empty (scratch) base, running as 65532:65532.
#
#   docker build --build-arg IKE_REVISION="$(git rev-parse --short=12 HEAD)" -t iam-key-exporter .
#   docker run --rm -p 9871:9871 \
#     -v "$PWD/config.yaml:/etc/iam-key-exporter/config.yaml:ro" \
#     -e AWS_REGION=us-east-1 iam-key-exporter
#
# The debug symbols, kept out of the image, as a file (BuildKit):
#   docker build --target debug-symbols --output type=local,dest=dist .
# The binary and its symbols, as the release workflow ships them:
#   docker build --target dist --output type=local,dest=dist .
#
# From a binary built outside Docker (how `make image-test` builds the image with
# podman or buildah, which cannot pull the Rust image here): tests/image/test.sh
# puts the stripped binary, its symbols and a CA bundle in target/image/, then
#   buildah bud --build-arg BINARY_SOURCE=prebuilt -t iam-key-exporter .
#
# AWS credentials come from the SDK default chain (env, profile, web identity /
# IRSA, ECS, IMDS); nothing is baked into the image.

ARG RUST_IMAGE=rust:1-bookworm
# `builder` compiles in Docker; `prebuilt` takes target/image/ from the build context.
ARG BINARY_SOURCE=builder

# ---------------------------------------------------------------------------
# Build stage: a static glibc binary (no libc needed at run time) of the `dist` profile
# (release with debug info), stripped; the symbols go to a separate file linked by
# .gnu_debuglink.
# ---------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src

# .git is not in the build context, so the revision for iam_key_exporter_build_info is
# passed in (build.rs reads it).
ARG IKE_REVISION=unknown
ENV IKE_REVISION=${IKE_REVISION}

# The whole crate (see .dockerignore): Cargo.toml, Cargo.lock, src/ and any
# build script or target the manifest may declare.
COPY . .

# --locked: build exactly what Cargo.lock pins, fail if it is out of date.
# crt-static needs an explicit --target, so that build scripts and proc macros stay
# dynamic. The cache mounts keep the registry and target/ between builds (BuildKit);
# the files are copied out of the cached target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    TARGET="$(rustc -vV | sed -n 's/^host: //p')" \
 && RUSTFLAGS="-C target-feature=+crt-static" cargo build --profile dist --locked --target "$TARGET" \
 && mkdir -p /out \
 && objcopy --only-keep-debug "target/$TARGET/dist/iam-key-exporter" /out/iam-key-exporter.debug \
 && objcopy --strip-debug --strip-unneeded --add-gnu-debuglink=/out/iam-key-exporter.debug \
      "target/$TARGET/dist/iam-key-exporter" /out/iam-key-exporter \
 && cp /etc/ssl/certs/ca-certificates.crt /out/ca-certificates.crt

# ---------------------------------------------------------------------------
# The same files, built outside Docker (tests/image/test.sh).
# ---------------------------------------------------------------------------
FROM scratch AS prebuilt
COPY target/image/ /out/

# The stage named by BINARY_SOURCE; the other one is never built.
FROM ${BINARY_SOURCE} AS binary

# ---------------------------------------------------------------------------
# Debug symbols only: `--target debug-symbols --output type=local,dest=DIR`.
# ---------------------------------------------------------------------------
FROM scratch AS debug-symbols
COPY --from=binary /out/iam-key-exporter.debug /

# ---------------------------------------------------------------------------
# The binary and its symbols: `--target dist --output type=local,dest=DIR`
# (.github/workflows/release.yml).
# ---------------------------------------------------------------------------
FROM scratch AS dist
COPY --from=binary /out/iam-key-exporter /out/iam-key-exporter.debug /

# ---------------------------------------------------------------------------
# Runtime: nothing but the binary and the CA certificates (rustls reads them from
# the system store). No shell, no libc, non-root (65532).
# ---------------------------------------------------------------------------
FROM scratch

LABEL org.opencontainers.image.title="iam-key-exporter" \
      org.opencontainers.image.description="Prometheus exporter for AWS IAM access key age and usage across many accounts" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/iam-key-exporter/iam-key-exporter"

COPY --from=binary /out/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=binary /out/iam-key-exporter /usr/local/bin/iam-key-exporter

# Numeric user so Kubernetes can verify runAsNonRoot.
USER 65532:65532

EXPOSE 9871

ENTRYPOINT ["/usr/local/bin/iam-key-exporter"]
CMD ["--config.file=/etc/iam-key-exporter/config.yaml"]
