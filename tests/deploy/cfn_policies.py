"""Render the CloudFormation templates and check their IAM policies.

    python cfn_policies.py CFN_DIR OUT_DIR

For every template in CFN_DIR and every parameter variant below (optional parameters
empty, then set; each trust mode), resolve the intrinsic functions the templates use
(Ref, Fn::Sub, Fn::If, Fn::Equals, Fn::Not, Fn::GetAtt), check the parameters against
AllowedValues, AllowedPattern and the template's Rules (and that the variants listed as
invalid are refused), parse policies written as JSON strings, and check every trust and
permission policy:

  - Effect Allow only, no NotAction / NotPrincipal / NotResource;
  - no wildcard (`*` or `?`) in any action;
  - permission policies: only List and Read actions, by the access level of AWS's
    Service Authorization Reference as policy_sentry ships it, except sts:AssumeRole on
    named roles (never `*`) in the exporter's own role;
  - exactly the actions the exporter needs (both sources; the Organizations calls of
    discovery; AssumeRole), no more, no fewer;
  - trust policies: the exporter's role ARN (or, for the exporter's role, the OIDC
    provider with sub and aud conditions under TrustMode irsa, and EKS Pod Identity with
    sts:TagSession and the namespace and service account session tags under
    pod-identity), never `*`; the ExternalId condition present exactly when set;
  - no hard-coded partition (`arn:aws:`) or account id in Resources (StackSet-ready,
    partition-aware).

The rendered templates (JSON, policies as objects) are written to OUT_DIR so checkov
also sees policies that are JSON strings or behind Fn::If in the sources.
Needs PyYAML and policy_sentry (the checkov virtualenv has both).
"""

import json
import os
import re
import sys

import yaml
from policy_sentry.querying.actions import get_action_data

PARTITION, ACCOUNT, REGION = "aws", "123456789012", "us-east-1"
EXPORTER_ROLE = "arn:aws:iam::210987654321:role/iam-key-exporter"
DISCOVERY_ROLE = "arn:aws:iam::111122223333:role/IAMKeyExporterOrgReader"
OIDC_URL = "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
OIDC_ARN = f"arn:aws:iam::210987654321:oidc-provider/{OIDC_URL}"

# template -> (parameter variants, the permission actions it must grant exactly)
TEMPLATES = {
    "member-role.yaml": (
        [{"ExporterRoleArn": EXPORTER_ROLE},
         {"ExporterRoleArn": EXPORTER_ROLE, "ExternalId": "example-external-id"}],
        {"iam:ListUsers", "iam:ListAccessKeys", "iam:GetAccessKeyLastUsed",
         "iam:GenerateCredentialReport", "iam:GetCredentialReport",
         "iam:GetAccountAuthorizationDetails", "iam:ListServiceSpecificCredentials",
         "iam:GetAccountSummary",
         "iam:ListSSHPublicKeys"},
    ),
    "discovery-role.yaml": (
        [{"ExporterRoleArn": EXPORTER_ROLE}],
        {"organizations:ListRoots", "organizations:ListOrganizationalUnitsForParent",
         "organizations:ListAccountsForParent", "organizations:ListAccounts",
         "organizations:ListParents", "organizations:ListTagsForResource"},
    ),
    "exporter-role.yaml": (
        [{"OIDCProviderArn": OIDC_ARN, "OIDCProviderUrl": OIDC_URL},
         {"TrustMode": "irsa", "OIDCProviderArn": OIDC_ARN, "OIDCProviderUrl": OIDC_URL,
          "DiscoveryRoleArn": DISCOVERY_ROLE},
         {"TrustMode": "pod-identity"},
         {"TrustMode": "pod-identity", "DiscoveryRoleArn": DISCOVERY_ROLE,
          "Namespace": "observability", "ServiceAccountName": "iam-exporter"}],
        {"sts:AssumeRole"},
    ),
}
# Parameter sets a template must refuse (CloudFormation would not create the stack).
INVALID = {
    "exporter-role.yaml": [
        {},  # irsa, the default, without the OIDC provider
        {"TrustMode": "irsa", "OIDCProviderArn": OIDC_ARN},
        {"TrustMode": "oidc", "OIDCProviderArn": OIDC_ARN, "OIDCProviderUrl": OIDC_URL},
    ],
}
TRUST_ACTIONS = {"sts:AssumeRole", "sts:AssumeRoleWithWebIdentity", "sts:TagSession"}
POD_IDENTITY = "pods.eks.amazonaws.com"
READ_ONLY_LEVELS = {"List", "Read"}


# --- YAML with CloudFormation's short-form tags ------------------------------------
class CfnLoader(yaml.SafeLoader):
    pass


def _tag(name):
    def construct(loader, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if name == "Fn::GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {name: value}
    return construct


for _t in ("Ref", "Sub", "If", "Not", "Equals", "And", "Or", "GetAtt", "Join",
           "Select", "Split", "Base64", "FindInMap", "ImportValue", "Condition"):
    CfnLoader.add_constructor("!" + _t, _tag("Ref" if _t == "Ref" else
                                             "Condition" if _t == "Condition" else "Fn::" + _t))


class NoValue:
    pass


def render(template, params):
    values = {k: v.get("Default", "") for k, v in (template.get("Parameters") or {}).items()}
    unknown = set(params) - set(values)
    if unknown:
        raise ValueError(f"unknown parameters {unknown}")
    values.update(params)
    values.update({"AWS::Partition": PARTITION, "AWS::AccountId": ACCOUNT,
                   "AWS::Region": REGION, "AWS::URLSuffix": "amazonaws.com",
                   "AWS::StackName": "test", "AWS::NoValue": NoValue})
    for name, spec in (template.get("Parameters") or {}).items():
        pattern = spec.get("AllowedPattern")
        if pattern and not re.fullmatch(pattern, str(values[name])):
            raise ValueError(f"parameter {name}={values[name]!r} does not match {pattern}")
        allowed = spec.get("AllowedValues")
        if allowed is not None and values[name] not in allowed:
            raise ValueError(f"parameter {name}={values[name]!r} is not one of {allowed}")
    conditions = {}

    def condition(name):
        if name not in conditions:
            conditions[name] = bool(ev(template["Conditions"][name]))
        return conditions[name]

    def sub(text, local):
        def repl(m):
            key = m.group(1)
            if key.startswith("!"):
                return "${" + key[1:] + "}"
            if key in local:
                return str(local[key])
            if "." in key:
                return f"<{key}>"
            if key not in values:
                raise ValueError(f"Fn::Sub: unknown variable {key}")
            return str(values[key])
        return re.sub(r"\$\{([^}]+)\}", repl, text)

    def ev(node):
        if isinstance(node, list):
            return [x for x in (ev(i) for i in node) if x is not NoValue]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                if arg not in values:
                    return f"<{arg}>"  # a resource
                return values[arg]
            if key == "Fn::Sub":
                if isinstance(arg, str):
                    return sub(arg, {})
                return sub(arg[0], {k: ev(v) for k, v in arg[1].items()})
            if key == "Fn::If":
                return ev(arg[1] if condition(arg[0]) else arg[2])
            if key == "Fn::Equals":
                a, b = ev(arg)
                return a == b
            if key == "Fn::Not":
                return not ev(arg[0])
            if key == "Fn::And":
                return all(ev(a) for a in arg)
            if key == "Fn::Or":
                return any(ev(a) for a in arg)
            if key == "Condition":
                return condition(arg)
            if key == "Fn::GetAtt":
                return "<{}.{}>".format(*arg)
            if key.startswith("Fn::"):
                raise ValueError(f"intrinsic {key} not supported by this checker")
        out = {}
        for k, v in node.items():
            v = ev(v)
            if v is not NoValue:
                out[k] = v
        return out

    for rule_name, rule in (template.get("Rules") or {}).items():
        if "RuleCondition" in rule and not ev(rule["RuleCondition"]):
            continue
        for assertion in rule.get("Assertions") or []:
            if not ev(assertion["Assert"]):
                raise ValueError(f"rule {rule_name}: {assertion.get('AssertDescription')}")
    resources = {}
    for name, res in template["Resources"].items():
        if "Condition" in res and not condition(res["Condition"]):
            continue
        resources[name] = ev(res)
    return resources


def as_list(x):
    return x if isinstance(x, list) else [x]


def access_level(action):
    service, name = action.split(":", 1)
    rows = get_action_data(service, name)
    rows = rows.get(service, []) if isinstance(rows, dict) else []
    levels = {r["access_level"] for r in rows if r["action"].lower() == action.lower()}
    return levels


def check_statements(where, doc, errors):
    if isinstance(doc, str):
        try:
            doc = json.loads(doc)
        except ValueError as e:
            errors.append(f"{where}: policy is not valid JSON: {e}")
            return None
    if doc.get("Version") != "2012-10-17":
        errors.append(f"{where}: Version is not 2012-10-17")
    for i, st in enumerate(as_list(doc.get("Statement", []))):
        w = f"{where} statement {st.get('Sid', i)}"
        if st.get("Effect") != "Allow":
            errors.append(f"{w}: Effect {st.get('Effect')!r} (only Allow is expected)")
        for neg in ("NotAction", "NotPrincipal", "NotResource"):
            if neg in st:
                errors.append(f"{w}: uses {neg}")
        for a in as_list(st.get("Action", [])):
            if not isinstance(a, str) or "*" in a or "?" in a:
                errors.append(f"{w}: wildcard or non-string action {a!r}")
    return doc


def check_template(path, variants, expected_actions, out_dir, errors):
    name = os.path.basename(path)
    source = open(path).read()
    template = yaml.load(source, Loader=CfnLoader)
    for params in INVALID.get(name, []):
        try:
            render(template, params)
            errors.append(f"{name} [{', '.join(sorted(params)) or 'defaults'}]: accepted, "
                          "but these parameters must be refused")
        except ValueError:
            pass
    raw_resources = json.dumps(template["Resources"])
    if "arn:aws:" in raw_resources:
        errors.append(f"{name}: Resources hard-code the aws partition (use ${{AWS::Partition}})")
    if re.search(r"(?<!\d)\d{12}(?!\d)", raw_resources):
        errors.append(f"{name}: Resources hard-code a 12-digit account id")
    for n, params in enumerate(variants):
        tag = f"{name} [{', '.join(sorted(params))}]"
        try:
            resources = render(template, params)
        except (ValueError, KeyError) as e:
            errors.append(f"{tag}: cannot render: {e}")
            continue
        roles = {k: r for k, r in resources.items() if r.get("Type") == "AWS::IAM::Role"}
        if not roles:
            errors.append(f"{tag}: no AWS::IAM::Role")
        granted = set()
        for rname, role in roles.items():
            props = role.get("Properties", {})
            trust = check_statements(f"{tag} {rname} trust policy",
                                     props.get("AssumeRolePolicyDocument", {}), errors)
            if trust is not None:
                props["AssumeRolePolicyDocument"] = trust
                check_trust(f"{tag} {rname} trust policy", trust, params, errors)
            for pol in props.get("Policies", []):
                w = f"{tag} {rname} policy {pol.get('PolicyName')}"
                doc = check_statements(w, pol.get("PolicyDocument", {}), errors)
                if doc is None:
                    continue
                pol["PolicyDocument"] = doc
                for st in as_list(doc.get("Statement", [])):
                    for a in as_list(st.get("Action", [])):
                        if not isinstance(a, str) or "*" in a:
                            continue
                        granted.add(a)
                        check_permission(f"{w} {a}", a, as_list(st.get("Resource", [])), errors)
            if props.get("ManagedPolicyArns"):
                errors.append(f"{tag} {rname}: attaches managed policies (not checkable here)")
        if granted != expected_actions:
            missing, extra = expected_actions - granted, granted - expected_actions
            errors.append(f"{tag}: actions differ from what the exporter needs: "
                          f"missing {sorted(missing)}, extra {sorted(extra)}")
        rendered = dict(template)
        rendered["Resources"] = resources
        rendered.pop("Conditions", None)
        rendered.pop("Rules", None)
        with open(os.path.join(out_dir, f"{name[:-5]}-{n}.json"), "w") as f:
            json.dump(rendered, f, indent=2)


def check_trust(where, doc, params, errors):
    for st in as_list(doc.get("Statement", [])):
        actions = set(as_list(st.get("Action", [])))
        if not actions <= TRUST_ACTIONS:
            errors.append(f"{where}: trust actions {sorted(actions - TRUST_ACTIONS)}")
        principal = st.get("Principal")
        flat = json.dumps(principal)
        if principal == "*" or '"*"' in flat:
            errors.append(f"{where}: principal is *")
        cond = st.get("Condition") or {}
        pod_identity = (principal or {}).get("Service") == POD_IDENTITY
        if pod_identity != (params.get("TrustMode") == "pod-identity"):
            errors.append(f"{where}: TrustMode {params.get('TrustMode', 'irsa')} but principal {principal}")
        if pod_identity:
            if actions != {"sts:AssumeRole", "sts:TagSession"}:
                errors.append(f"{where}: EKS Pod Identity needs sts:AssumeRole and sts:TagSession, "
                              f"has {sorted(actions)}")
            tags = cond.get("StringEquals") or {}
            want = {"aws:RequestTag/kubernetes-namespace": params.get("Namespace", "monitoring"),
                    "aws:RequestTag/kubernetes-service-account":
                        params.get("ServiceAccountName", "iam-key-exporter")}
            if tags != want or set(cond) != {"StringEquals"}:
                errors.append(f"{where}: Pod Identity trust conditions {cond}, expected StringEquals {want}")
        elif "sts:AssumeRoleWithWebIdentity" in actions:
            keys = set((cond.get("StringEquals") or {}).keys())
            if not any(k.endswith(":sub") for k in keys) or not any(k.endswith(":aud") for k in keys):
                errors.append(f"{where}: web identity trust without :sub and :aud conditions")
            if (principal or {}).get("Federated") != params.get("OIDCProviderArn"):
                errors.append(f"{where}: Federated principal is not the OIDC provider parameter")
        else:
            if (principal or {}).get("AWS") != params.get("ExporterRoleArn"):
                errors.append(f"{where}: principal is not the ExporterRoleArn parameter")
            external = (cond.get("StringEquals") or {}).get("sts:ExternalId")
            if params.get("ExternalId"):
                if external != params["ExternalId"]:
                    errors.append(f"{where}: ExternalId set but no sts:ExternalId condition")
            elif "ExternalId" in params or cond:
                errors.append(f"{where}: unexpected condition {cond}")


def check_permission(where, action, resources, errors):
    if action == "sts:AssumeRole":
        for r in resources:
            if not re.fullmatch(r"arn:aws:iam::(\d{12}|\*):role/[\w+=,.@/-]+", str(r)):
                errors.append(f"{where}: AssumeRole on {r!r}, not a named role")
        return
    levels = access_level(action)
    if not levels:
        errors.append(f"{where}: unknown to policy_sentry (typo?)")
    elif not levels <= READ_ONLY_LEVELS:
        errors.append(f"{where}: access level {sorted(levels)} is not List/Read")


def main():
    cfn_dir, out_dir = sys.argv[1:3]
    errors = []
    found = sorted(f for f in os.listdir(cfn_dir) if f.endswith((".yaml", ".yml")))
    for f in found:
        if f not in TEMPLATES:
            errors.append(f"{f}: no policy expectations in tests/deploy/cfn_policies.py")
    for f, (variants, expected) in TEMPLATES.items():
        path = os.path.join(cfn_dir, f)
        if not os.path.exists(path):
            errors.append(f"{f}: missing")
            continue
        check_template(path, variants, expected, out_dir, errors)
    for e in errors:
        print(e)
    if errors:
        return 1
    print(f"{len(TEMPLATES)} templates, {sum(len(v) for v, _ in TEMPLATES.values())} parameter "
          "variants: Allow only, no wildcard action, List/Read actions only (policy_sentry) "
          "besides sts:AssumeRole on named roles, exactly the actions needed, trust limited "
          "to the exporter / its service account (IRSA or EKS Pod Identity), invalid "
          f"parameters refused ({sum(len(v) for v in INVALID.values())}), ExternalId condition iff set, no "
          "hard-coded partition or account")
    return 0


if __name__ == "__main__":
    sys.exit(main())
