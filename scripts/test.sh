#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests (against moto, promtool), the moto
# launcher's self-test, and the deploy-file validators. Installs what they need first.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

bash scripts/setup-test-env.sh

echo "== cargo test"
cargo test --no-fail-fast

echo "== moto launcher self-test"
.venv/bin/python tests/moto/test_launcher.py

echo "== deploy files"
bash tests/deploy/check.sh
