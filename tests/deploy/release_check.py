"""The image the manifests pull is the one a release pushes.

    python release_check.py REPO

1. .github/workflows/release.yml runs on version tags, takes the version from
   scripts/release-version.sh (the tag must be v<Cargo.toml version>), and pushes
   $IMAGE:$VERSION, IMAGE being its `env`; the script itself accepts v<version> and
   refuses any other tag.
2. Both kustomize variants (deploy/kubernetes, deploy/kubernetes-sharded) render every
   container with exactly IMAGE:<Cargo.toml version>.
3. Every ghcr.io image named in the manifests' sources, the docs (README.md,
   ARCHITECTURE.md, deploy/, docs/) and the Dockerfile is IMAGE, and where it has a tag,
   that tag is the version.
"""

import os
import re
import subprocess
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kustomize_build import build  # noqa: E402

VARIANTS = ("deploy/kubernetes", "deploy/kubernetes-sharded")
WORKFLOW = ".github/workflows/release.yml"
SCANNED = ("README.md", "ARCHITECTURE.md", "Dockerfile", "deploy", "docs")
GHCR = re.compile(r"ghcr\.io/[\w.-]+/[\w.-]+(?::[\w.-]*\w)?")

errors = []


def cargo_version(repo):
    with open(os.path.join(repo, "Cargo.toml"), encoding="utf-8") as f:
        m = re.search(r'^\[package\]$.*?^version = "([^"]+)"$', f.read(), re.M | re.S)
    if not m:
        sys.exit("Cargo.toml: no [package] version")
    return m.group(1)


def release_version(repo, tag):
    return subprocess.run(["bash", os.path.join(repo, "scripts", "release-version.sh"), tag],
                          capture_output=True, text=True)


def check_workflow(repo, version):
    with open(os.path.join(repo, WORKFLOW), encoding="utf-8") as f:
        wf = yaml.safe_load(f)
    image = (wf.get("env") or {}).get("IMAGE")
    if not image or ":" in image:
        errors.append(f"{WORKFLOW}: env IMAGE must name the image without a tag, not {image!r}")
        return None
    on = wf.get("on", wf.get(True)) or {}  # YAML 1.1 reads the key `on` as true
    if not (on.get("push") or {}).get("tags"):
        errors.append(f"{WORKFLOW}: does not run on pushed tags")
    runs = {name: "\n".join(s.get("run", "") for s in job.get("steps", []))
            for name, job in wf["jobs"].items()}
    if not any('scripts/release-version.sh "$GITHUB_REF_NAME"' in r for r in runs.values()):
        errors.append(f"{WORKFLOW}: the version does not come from "
                      'scripts/release-version.sh "$GITHUB_REF_NAME"')
    tagging = [n for n, r in runs.items() if '--tag "$IMAGE:$VERSION"' in r]
    if not tagging:
        errors.append(f'{WORKFLOW}: no job pushes --tag "$IMAGE:$VERSION"')
    for name in tagging:
        env = wf["jobs"][name].get("env") or {}
        needs = wf["jobs"][name].get("needs") or []
        source = re.fullmatch(r"\$\{\{ needs\.(\w+)\.outputs\.version \}\}",
                              str(env.get("VERSION", "")))
        if not source or source.group(1) not in needs:
            errors.append(f"{WORKFLOW}: job {name} pushes $IMAGE:$VERSION with VERSION "
                          f"{env.get('VERSION')!r}, not a needed job's version output")
    good = release_version(repo, f"v{version}")
    if good.returncode != 0 or good.stdout.strip() != version:
        errors.append(f"scripts/release-version.sh v{version}: exit {good.returncode}, printed "
                      f"{good.stdout.strip()!r} {good.stderr.strip()}")
    for bad in (version, f"v{version}.1", f"v{version}-rc1", "v0.0.0-" + version):
        r = release_version(repo, bad)
        if r.returncode == 0:
            errors.append(f"scripts/release-version.sh accepts the tag {bad} "
                          f"for version {version}")
    return image


def check_renders(repo, expected):
    containers = 0
    for variant in VARIANTS:
        for obj in yaml.safe_load_all(build(os.path.join(repo, variant))):
            pod = ((obj or {}).get("spec") or {}).get("template", {}).get("spec") or {}
            for c in pod.get("containers", []) + pod.get("initContainers", []):
                containers += 1
                if c.get("image") != expected:
                    errors.append(f"{variant}: {obj['kind']}/{obj['metadata']['name']} "
                                  f"container {c['name']} runs {c.get('image')}, "
                                  f"not {expected}")
    if containers == 0:
        errors.append("the kustomize variants render no container")
    return containers


def scanned_files(repo):
    for entry in SCANNED:
        path = os.path.join(repo, entry)
        if os.path.isfile(path):
            yield path
        for root, _, files in os.walk(path):
            for name in sorted(files):
                if name.endswith((".md", ".yaml", ".yml", ".json")):
                    yield os.path.join(root, name)


def check_mentions(repo, image, version):
    mentions = 0
    for path in scanned_files(repo):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for m in GHCR.finditer(text):
            mentions += 1
            name, _, tag = m.group(0).partition(":")
            line = text.count("\n", 0, m.start()) + 1
            where = f"{os.path.relpath(path, repo)}:{line}"
            if name != image:
                errors.append(f"{where}: {m.group(0)} is not the released image {image}")
            elif tag and tag != version:
                errors.append(f"{where}: {m.group(0)}: the release of Cargo.toml's version "
                              f"pushes the tag {version}")
    return mentions


def main():
    repo = sys.argv[1]
    version = cargo_version(repo)
    image = check_workflow(repo, version)
    if image is None:
        print("\n".join(errors))
        return 1
    containers = check_renders(repo, f"{image}:{version}")
    mentions = check_mentions(repo, image, version)
    for e in errors:
        print(e)
    if errors:
        return 1
    print(f"the release pushes {image}:{version} (tag v{version}); {containers} rendered "
          f"containers and {mentions} mentions in manifests and docs name it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
