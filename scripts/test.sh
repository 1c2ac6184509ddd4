#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests (against moto, promtool), the moto
# launcher's self-test, and the deploy-file validators. Installs what they need first.
# The container image is checked separately (`make image-test`: it needs a second,
# release build of about 9 minutes).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

bash scripts/setup-test-env.sh

echo "== cargo test"
cargo test --no-fail-fast

echo "== moto launcher self-test"
.venv/bin/python tests/moto/test_launcher.py

echo "== deploy files"
# The binary cargo test just built: systemd-analyze verify runs the units against it, and
# the manifests' flags and configuration are checked against it.
IKE_BIN="${CARGO_TARGET_DIR:-$REPO/target}/debug/iam-key-exporter" bash tests/deploy/check.sh
