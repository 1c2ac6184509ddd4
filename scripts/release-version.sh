#!/usr/bin/env bash
# The version a release tag publishes: prints X.Y.Z for the tag vX.Y.Z when X.Y.Z is
# Cargo.toml's version, and fails otherwise, so that a release never pushes an image
# tag that the manifests do not pull (.github/workflows/release.yml).
#
#   scripts/release-version.sh v0.1.0
set -euo pipefail
tag="${1:?usage: $0 TAG (vX.Y.Z, X.Y.Z being the version in Cargo.toml)}"
cargo_toml="$(dirname "${BASH_SOURCE[0]}")/../Cargo.toml"
# The first `version = "…"` is [package]'s: it is the manifest's first table.
version="$(sed -n 's/^version = "\([^"]*\)"$/\1/p' "$cargo_toml" | head -n 1)"
[[ -n "$version" ]] || { echo "no version in $cargo_toml" >&2; exit 1; }
if [[ "$tag" != "v$version" ]]; then
    echo "tag $tag does not match Cargo.toml's version $version: tag v$version, or bump the version (and the image tag in the manifests) first" >&2
    exit 1
fi
echo "$version"
