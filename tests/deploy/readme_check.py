"""deploy/README.md describes only what exists.

    python readme_check.py REPO

- every relative Markdown link points to an existing file or directory, and every
  `#anchor` into a Markdown file to one of its headings;
- every repository path it names (deploy/..., tests/..., scripts/..., config/...) exists;
- every `kubectl apply -k DIR` names a kustomization;
- every `aws SERVICE OPERATION --option ...` command (continuation lines joined) names an
  operation of that service and options of that operation, as botocore's service models
  define them (the AWS CLI is generated from the same models), including the keys of
  shorthand structures (`--auto-deployment Enabled=true,...`); `aws cloudformation
  deploy` is a CLI customization, checked against its documented options.
"""

import os
import re
import sys

import botocore.session
from botocore import xform_name

GLOBAL_OPTIONS = {"--region", "--profile", "--output", "--query", "--no-cli-pager",
                  "--endpoint-url", "--debug", "--no-paginate", "--cli-input-json",
                  "--cli-input-yaml", "--generate-cli-skeleton", "--color",
                  "--no-verify-ssl", "--no-sign-request", "--ca-bundle",
                  "--cli-read-timeout", "--cli-connect-timeout"}
PAGINATION_OPTIONS = {"--starting-token", "--page-size", "--max-items"}
# `aws cloudformation deploy` (awscli customization) and its options.
CUSTOM = {
    ("cloudformation", "deploy"): {
        "--template-file", "--stack-name", "--s3-bucket", "--s3-prefix", "--kms-key-id",
        "--force-upload", "--use-json", "--parameter-overrides", "--capabilities",
        "--no-execute-changeset", "--disable-rollback", "--no-disable-rollback",
        "--role-arn", "--notification-arns", "--fail-on-empty-changeset",
        "--no-fail-on-empty-changeset", "--tags"},
}


def slug(heading):
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def anchors(path):
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


def code_blocks(text):
    return re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)


def commands(block):
    joined = re.sub(r"\\\n\s*", " ", block)
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


def split_args(cmd):
    return re.findall(r"""(?:[^\s"']+|"[^"]*"|'[^']*')+""", cmd)


def check_aws(cmd, session, errors):
    words = split_args(cmd)
    if len(words) < 3:
        errors.append(f"aws command too short: {cmd}")
        return
    service, op = words[1], words[2]
    options = {}
    current = None
    for w in words[3:]:
        if w.startswith("--"):
            current = w
            options[current] = []
        elif current:
            options[current].append(w)
    if (service, op) in CUSTOM:
        for o in options:
            if o not in CUSTOM[(service, op)] | GLOBAL_OPTIONS:
                errors.append(f"aws {service} {op}: no option {o}")
        return
    try:
        model = session.get_service_model(service)
    except Exception:
        errors.append(f"aws {service}: no such service")
        return
    ops = {xform_name(name, "-"): name for name in model.operation_names}
    if op not in ops:
        errors.append(f"aws {service}: no operation {op}")
        return
    opmodel = model.operation_model(ops[op])
    members = dict(opmodel.input_shape.members) if opmodel.input_shape else {}
    allowed = set(GLOBAL_OPTIONS) | PAGINATION_OPTIONS
    by_option = {}
    for name, shape in members.items():
        o = "--" + xform_name(name, "-")
        allowed.add(o)
        by_option[o] = shape
        if shape.type_name == "boolean":
            allowed.add("--no-" + xform_name(name, "-"))
    for o, values in options.items():
        if o not in allowed:
            errors.append(f"aws {service} {op}: no option {o}")
            continue
        shape = by_option.get(o)
        if shape is None or not values:
            continue
        target = shape.member if shape.type_name == "list" else shape
        if target.type_name != "structure":
            continue
        for value in values:
            if value.startswith(("file://", "{", "[")) or "=" not in value:
                continue
            for key in re.findall(r"(?:^|,)(\w+)=", value):
                if key not in target.members:
                    errors.append(f"aws {service} {op} {o}: {target.name} has no key {key}")


def main():
    repo = sys.argv[1]
    readme = os.path.join(repo, "deploy", "README.md")
    text = open(readme, encoding="utf-8").read()
    base = os.path.dirname(readme)
    errors = []
    links = 0
    for m in re.finditer(r"\]\(([^)\s]+)\)", text):
        target = m.group(1)
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        links += 1
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(base, path)) if path else readme
        if not os.path.exists(full):
            errors.append(f"link {target}: {os.path.relpath(full, repo)} does not exist")
        elif anchor and full.endswith(".md") and anchor not in anchors(full):
            errors.append(f"link {target}: no heading #{anchor} in {os.path.relpath(full, repo)}")
    paths = set(re.findall(r"(?<![\w./-])((?:deploy|tests|scripts|config)/[\w./-]*\w)", text))
    for p in sorted(paths):
        if not os.path.exists(os.path.join(repo, p)):
            errors.append(f"path {p} does not exist")
    session = botocore.session.get_session()
    aws_cmds = 0
    for block in code_blocks(text):
        for cmd in commands(block):
            for m in re.finditer(r"kubectl apply -k (\S+)", cmd):
                if not os.path.isfile(os.path.join(repo, m.group(1), "kustomization.yaml")):
                    errors.append(f"kubectl apply -k {m.group(1)}: no kustomization there")
            for m in re.finditer(r"(?:--template-file |file://)(\S+)", cmd):
                if not os.path.isfile(os.path.join(repo, m.group(1))):
                    errors.append(f"{m.group(0)}: no such file")
            for part in re.split(r"\$\(|\)|&&|\|", cmd):
                part = part.strip()
                if part.startswith("aws "):
                    aws_cmds += 1
                    check_aws(part, session, errors)
    for e in errors:
        print(e)
    if errors:
        return 1
    print(f"deploy/README.md: {links} links, {len(paths)} repository paths and {aws_cmds} aws "
          "commands (operations, options, shorthand keys) all exist")
    return 0


if __name__ == "__main__":
    sys.exit(main())
