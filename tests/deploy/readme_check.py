"""deploy/README.md describes only what exists, and both READMEs give the AWS setup in an
order that works.

    python readme_check.py REPO

- every relative Markdown link points to an existing file or directory, and every
  `#anchor` into a Markdown file to one of its headings;
- every repository path it names (deploy/..., tests/..., scripts/..., config/...) exists;
- every `kubectl apply -k DIR` names a kustomization;
- every `aws SERVICE OPERATION --option ...` command (continuation lines joined) names an
  operation of that service and options of that operation, as botocore's service models
  define them (the AWS CLI is generated from the same models), including the keys of
  shorthand structures (`--auto-deployment Enabled=true,...`); `aws cloudformation
  deploy` is a CLI customization, checked against its documented options;
- the order: IAM refuses a trust policy whose principal does not exist (CloudFormation
  fails with "Invalid principal in policy"), and member-role.yaml and discovery-role.yaml
  trust the role exporter-role.yaml makes (their ExporterRoleArn parameter). So in
  deploy/README.md's commands exporter-role.yaml is deployed before any template with an
  ExporterRoleArn parameter, as a stack or a StackSet; StackSets' trusted access to
  Organizations (`activate-organizations-access`) comes before the service-managed
  `create-stack-set`, which comes before `create-stack-instances`. In README.md's "Use it on
  your AWS accounts", the step naming exporter-role.yaml comes before the steps naming
  those templates.
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


def check_order(repo, deploy_readme_text, errors):
    cfn = os.path.join(repo, "deploy", "cloudformation")
    trusting = {f for f in os.listdir(cfn)
                if re.search(r"^  ExporterRoleArn:", open(os.path.join(cfn, f)).read(), re.M)}
    if not trusting:
        errors.append("order: no template with an ExporterRoleArn parameter")
    events = []  # (what, template or None), in the order the commands appear
    for block in code_blocks(deploy_readme_text):
        for cmd in commands(block):
            m = re.search(r"(?:--template-file |--template-body file://)deploy/cloudformation/(\S+)", cmd)
            if m:
                events.append(("template", m.group(1)))
            for op in ("activate-organizations-access", "create-stack-set", "create-stack-instances"):
                if re.search(r"\baws cloudformation %s\b" % op, cmd):
                    events.append((op, None))
    def first(what, template=None):
        return next((i for i, e in enumerate(events) if e == (what, template)), None)
    exporter = first("template", "exporter-role.yaml")
    if exporter is None:
        errors.append("order: deploy/README.md never deploys exporter-role.yaml")
    for i, (what, template) in enumerate(events):
        if what == "template" and template in trusting and (exporter is None or i < exporter):
            errors.append(f"order: deploy/README.md deploys {template} (it trusts the exporter's "
                          "role) before exporter-role.yaml")
    for before, after in (("activate-organizations-access", "create-stack-set"),
                          ("create-stack-set", "create-stack-instances")):
        a, b = first(before), first(after)
        if a is None or b is None or a > b:
            errors.append(f"order: deploy/README.md should run {before} before {after}")
    # README.md: the numbered steps of "Use it on your AWS accounts".
    text = open(os.path.join(repo, "README.md"), encoding="utf-8").read()
    section = re.search(r"^## Use it on your AWS accounts\n(.*?)^## ", text, re.S | re.M)
    if not section:
        errors.append("order: README.md has no section \"Use it on your AWS accounts\"")
        return
    steps = re.split(r"^\d+\. ", section.group(1), flags=re.M)[1:]
    def step_of(template):
        return next((i for i, st in enumerate(steps) if template in st), None)
    exporter_step = step_of("exporter-role.yaml")
    for template in sorted(trusting):
        step = step_of(template)
        if exporter_step is None or step is None or step < exporter_step:
            errors.append(f"order: README.md's setup steps should name exporter-role.yaml before "
                          f"{template}")


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
    check_order(repo, text, errors)
    for e in errors:
        print(e)
    if errors:
        return 1
    print(f"deploy/README.md: {links} links, {len(paths)} repository paths and {aws_cmds} aws "
          "commands (operations, options, shorthand keys) all exist; the exporter's role comes "
          "before the roles that trust it, here and in README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
