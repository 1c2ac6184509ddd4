"""Render the kustomize variants and check what they produce.

    python k8s_check.py REPO OUT_DIR

1. Every kustomization (deploy/kubernetes*/**/kustomization.yaml) lists only files and
   directories that exist, and every YAML file next to it is used by it.
2. Each variant is built with the real kustomize library (kustomize_build.py):
       single   deploy/kubernetes           Deployment, 1 replica
       sharded  deploy/kubernetes-sharded   StatefulSet, 3 shards, PDB, ServiceMonitor,
                                            PrometheusRule, dashboard ConfigMap
   Built-in kinds go to OUT_DIR/<variant>.yaml (for kubernetes-validate --strict),
   prometheus-operator kinds to OUT_DIR/<variant>-crds.json (for validate_crds.mjs).
3. The rendered objects fit together: one namespace; selectors match the pod labels;
   the ServiceAccount, ConfigMap, Service ports and probe ports referred to exist; the
   config is mounted as a directory (no subPath, so updates reach the pod) and
   --config.auto-reload-interval is set; the configuration parses and uses only the
   keys of the configuration contract; sharded: replicas == --shard.total,
   --shard.index=auto, Parallel pod management, a headless governing Service, a PDB, a
   ServiceMonitor selecting exactly one Service on an existing port, the PrometheusRule
   equal to deploy/prometheus/iam-key-exporter.rules.yml, the dashboard ConfigMap equal
   to deploy/grafana/iam-key-exporter.json, the StatefulSet's pod template equal to
   the Deployment's but for the two shard flags and the topology spread (zone and node,
   selecting the pods), and a NetworkPolicy on the pods (ingress only from one namespace
   on the metrics port; egress only DNS, HTTPS and the Pod Identity agent).
4. The shard count is written once: statefulset.yaml says `--shard.total=REPLICAS`, and
   a copy of deploy/ with other replica counts (in statefulset.yaml, or a `replicas:`
   entry in the kustomization) renders --shard.total equal to them.
"""

import copy
import json
import os
import re
import shutil
import sys
import tempfile

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kustomize_build import build  # noqa: E402

VARIANTS = {"single": "deploy/kubernetes", "sharded": "deploy/kubernetes-sharded"}
CRD_GROUP = "monitoring.coreos.com/"
SHARD_FLAGS = ("--shard.total=", "--shard.index=")
SHARD_PLACEHOLDER = "--shard.total=REPLICAS"
SPREAD_KEYS = {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
# What the NetworkPolicy lets the pods reach: DNS, HTTPS (AWS), the EKS Pod Identity agent.
EGRESS = {("UDP", 53, ()), ("TCP", 53, ()), ("TCP", 443, ()),
          ("TCP", 80, ("169.254.170.23/32", "fd00:ec2::23/128"))}

# The configuration contract (README "Configuration" and the discovery block).
CONFIG_KEYS = {
    "refresh_interval": None, "refresh_timeout": None, "concurrency": None,
    "max_staleness": None, "source": None,
    "sts": {"region", "session_name", "session_duration", "renew_before"},
    "aws": {"connect_timeout", "attempt_timeout", "operation_timeout", "max_attempts",
            "max_backoff", "requests_per_account", "requests_per_second",
            "credential_report_timeout"},
    "defaults": {"role_name", "external_id"},
    "user_tags_as_labels": None,
    "exemptions": {"tag", "rules"},
    "discovery": {"organizations"},
    "accounts": None,
}
ORGANIZATIONS_KEYS = {"role_arn", "include_ous", "exclude_ous", "exclude_accounts",
                      "tags_as_labels", "refresh_interval"}
ACCOUNT_KEYS = {"id", "name", "labels", "role_name", "role_arn", "external_id",
                "assume_role", "source", "user_tags_as_labels"}

errors = []


def err(msg):
    errors.append(msg)


def check_kustomizations(repo):
    count = 0
    walk = [w for v in VARIANTS.values() for w in os.walk(os.path.join(repo, v))]
    for d, _, files in walk:
        if "kustomization.yaml" not in files:
            if any(f.endswith((".yaml", ".yml")) for f in files):
                err(f"{os.path.relpath(d, repo)}: YAML files but no kustomization.yaml")
            continue
        count += 1
        rel = os.path.relpath(os.path.join(d, "kustomization.yaml"), repo)
        k = yaml.safe_load(open(os.path.join(d, "kustomization.yaml")))
        if not str(k.get("apiVersion", "")).startswith("kustomize.config.k8s.io/") or \
                k.get("kind") not in ("Kustomization", "Component"):
            err(f"{rel}: not a kustomize.config.k8s.io Kustomization or Component")
        used = set()
        for key in ("resources", "components"):
            for r in k.get(key) or []:
                if not os.path.exists(os.path.join(d, r)):
                    err(f"{rel}: {key} entry {r} does not exist")
                used.add(os.path.normpath(r))
        for p in k.get("patches") or []:
            if "path" in p:
                if not os.path.isfile(os.path.join(d, p["path"])):
                    err(f"{rel}: patch {p['path']} does not exist")
                used.add(os.path.normpath(p["path"]))
        for f in sorted(files):
            if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml" and f not in used:
                err(f"{rel}: {f} is not used (not in resources, components or patches)")
    if count == 0:
        err("no kustomization.yaml under deploy/kubernetes*")
    return count


def render(repo, variant, path, out_dir):
    try:
        text = build(os.path.join(repo, path))
    except RuntimeError as e:
        err(f"{variant}: kustomize build {path} failed: {e}")
        return []
    objs = [o for o in yaml.safe_load_all(text) if o]
    builtin = [o for o in objs if not o["apiVersion"].startswith(CRD_GROUP)]
    crds = [o for o in objs if o["apiVersion"].startswith(CRD_GROUP)]
    with open(os.path.join(out_dir, f"{variant}.yaml"), "w") as f:
        yaml.safe_dump_all(builtin, f, sort_keys=False)
    with open(os.path.join(out_dir, f"{variant}-crds.json"), "w") as f:
        json.dump(crds, f)
    return objs


def by_kind(objs, kind):
    return [o for o in objs if o["kind"] == kind]


def one(objs, kind, variant):
    found = by_kind(objs, kind)
    if len(found) != 1:
        err(f"{variant}: expected exactly one {kind}, found {len(found)}")
        return None
    return found[0]


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def container_args(workload):
    cs = workload["spec"]["template"]["spec"]["containers"]
    return cs[0].get("args", []) if cs else []


def check_config_text(where, text):
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        err(f"{where}: configuration is not YAML: {e}")
        return
    if not isinstance(cfg, dict):
        err(f"{where}: configuration is not a mapping")
        return
    for key, value in cfg.items():
        if key not in CONFIG_KEYS:
            err(f"{where}: unknown configuration key {key!r}")
        elif isinstance(CONFIG_KEYS[key], set):
            for sub in (value or {}):
                if sub not in CONFIG_KEYS[key]:
                    err(f"{where}: unknown configuration key {key}.{sub}")
    orgs = ((cfg.get("discovery") or {}).get("organizations")) or {}
    for sub in orgs:
        if sub not in ORGANIZATIONS_KEYS:
            err(f"{where}: unknown configuration key discovery.organizations.{sub}")
    for i, acc in enumerate(cfg.get("accounts") or []):
        for sub in acc:
            if sub not in ACCOUNT_KEYS:
                err(f"{where}: unknown configuration key accounts[{i}].{sub}")
    if "accounts" not in cfg:
        err(f"{where}: `accounts` missing (it may be empty with discovery)")
    if not cfg.get("accounts") and not orgs:
        err(f"{where}: neither accounts nor discovery.organizations")


def check_workload(variant, objs, workload):
    spec = workload["spec"]
    pod = spec["template"]
    labels = pod["metadata"].get("labels", {})
    if not matches(spec["selector"].get("matchLabels"), labels):
        err(f"{variant}: {workload['kind']} selector does not match its pod labels")
    podspec = pod["spec"]
    sa = podspec.get("serviceAccountName")
    if sa not in {o["metadata"]["name"] for o in by_kind(objs, "ServiceAccount")}:
        err(f"{variant}: serviceAccountName {sa} is not rendered")
    configmaps = {o["metadata"]["name"]: o for o in by_kind(objs, "ConfigMap")}
    volumes = {v["name"]: v for v in podspec.get("volumes", [])}
    c = podspec["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    for probe in ("livenessProbe", "readinessProbe"):
        port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
        if port not in ports:
            err(f"{variant}: {probe} port {port} is not a container port")
    args = container_args(workload)
    flags = dict(a.split("=", 1) for a in args if a.startswith("--") and "=" in a)
    if flags.get("--config.auto-reload-interval") != "30s":
        err(f"{variant}: --config.auto-reload-interval=30s missing from the args")
    config_file = flags.get("--config.file", "")
    mount = next((m for m in c.get("volumeMounts", [])
                  if config_file == m["mountPath"]
                  or config_file.startswith(m["mountPath"].rstrip("/") + "/")), None)
    if mount is None:
        err(f"{variant}: --config.file {config_file} is not on a mounted volume")
        return
    if "subPath" in mount:
        err(f"{variant}: the config volume uses subPath: ConfigMap updates would never reach the pod")
        key = mount["subPath"]
    else:
        key = config_file[len(mount["mountPath"].rstrip("/")) + 1:]
    cm_name = ((volumes.get(mount["name"]) or {}).get("configMap") or {}).get("name")
    cm = configmaps.get(cm_name)
    if cm is None or key not in (cm.get("data") or {}):
        err(f"{variant}: config file {config_file}: ConfigMap {cm_name} key {key} not rendered")
    else:
        check_config_text(f"{variant}: ConfigMap {cm_name} {key}", cm["data"][key])
    services = by_kind(objs, "Service")
    selecting = [s for s in services if matches(s["spec"].get("selector"), labels)]
    if not selecting:
        err(f"{variant}: no Service selects the pods")
    for s in selecting:
        for p in s["spec"].get("ports", []):
            if p.get("targetPort") not in ports and p.get("targetPort") not in ports.values():
                err(f"{variant}: Service {s['metadata']['name']} targetPort {p.get('targetPort')} not in the pod")
    return labels


def check_sharded(repo, variant, objs, single_objs):
    sts = one(objs, "StatefulSet", variant)
    if by_kind(objs, "Deployment"):
        err(f"{variant}: the Deployment is still rendered next to the StatefulSet")
    if sts is None:
        return
    labels = check_workload(variant, objs, sts) or {}
    spec = sts["spec"]
    args = container_args(sts)
    total = [a.split("=", 1)[1] for a in args if a.startswith("--shard.total=")]
    index = [a.split("=", 1)[1] for a in args if a.startswith("--shard.index=")]
    if total != [str(spec.get("replicas"))]:
        err(f"{variant}: --shard.total {total} differs from replicas {spec.get('replicas')}")
    if index != ["auto"]:
        err(f"{variant}: --shard.index should be auto, is {index}")
    if spec.get("podManagementPolicy") != "Parallel":
        err(f"{variant}: podManagementPolicy is not Parallel")
    svc = {s["metadata"]["name"]: s for s in by_kind(objs, "Service")}.get(spec.get("serviceName"))
    if svc is None or svc["spec"].get("clusterIP") != "None":
        err(f"{variant}: serviceName {spec.get('serviceName')} is not a rendered headless Service")
    pdb = one(objs, "PodDisruptionBudget", variant)
    if pdb and not matches(pdb["spec"]["selector"].get("matchLabels"), labels):
        err(f"{variant}: the PodDisruptionBudget does not select the pods")
    # The pod template is the Deployment's, plus the shard flags.
    dep = one(single_objs, "Deployment", "single")
    if dep:
        a, b = copy.deepcopy(dep["spec"]["template"]), copy.deepcopy(sts["spec"]["template"])
        for t in (a, b):
            c = t["spec"]["containers"][0]
            c["args"] = [x for x in c.get("args", []) if not x.startswith(SHARD_FLAGS)]
            t["spec"].pop("topologySpreadConstraints", None)
        if a != b:
            err(f"{variant}: the StatefulSet's pod template differs from deploy/kubernetes/deployment.yaml's "
                "(other than --shard.* and the topology spread): keep them the same")
    spread = sts["spec"]["template"]["spec"].get("topologySpreadConstraints") or []
    if {c.get("topologyKey") for c in spread} != SPREAD_KEYS:
        err(f"{variant}: the StatefulSet's topologySpreadConstraints should spread over {sorted(SPREAD_KEYS)}")
    for c in spread:
        if not matches((c.get("labelSelector") or {}).get("matchLabels"), labels) or \
                not (c.get("labelSelector") or {}).get("matchLabels"):
            err(f"{variant}: topology spread on {c.get('topologyKey')} does not select the pods")
    check_network_policy(variant, objs, labels)
    # prometheus-operator objects.
    sm = one(objs, "ServiceMonitor", variant)
    if sm:
        sel = sm["spec"]["selector"].get("matchLabels")
        picked = [s for s in by_kind(objs, "Service") if matches(sel, s["metadata"].get("labels", {}))]
        if len(picked) != 1:
            err(f"{variant}: the ServiceMonitor selects {len(picked)} Services (each pod would "
                "be scraped once per Service); it must select exactly one")
        else:
            names = {p.get("name") for p in picked[0]["spec"].get("ports", [])}
            for ep in sm["spec"].get("endpoints", []):
                if ep.get("port") not in names:
                    err(f"{variant}: ServiceMonitor endpoint port {ep.get('port')} not on the Service")
    rule = one(objs, "PrometheusRule", variant)
    if rule:
        source = yaml.safe_load(open(os.path.join(repo, "deploy/prometheus/iam-key-exporter.rules.yml")))
        if rule["spec"] != source:
            err(f"{variant}: the PrometheusRule's spec differs from deploy/prometheus/iam-key-exporter.rules.yml")
    dashboards = [o for o in by_kind(objs, "ConfigMap")
                  if (o["metadata"].get("labels") or {}).get("grafana_dashboard") == "1"]
    if len(dashboards) != 1:
        err(f"{variant}: expected one ConfigMap labelled grafana_dashboard: \"1\", found {len(dashboards)}")
    else:
        text = open(os.path.join(repo, "deploy/grafana/iam-key-exporter.json")).read()
        data = dashboards[0].get("data") or {}
        if list(data.values()) != [text]:
            err(f"{variant}: the dashboard ConfigMap differs from deploy/grafana/iam-key-exporter.json")
        json.loads(list(data.values())[0]) if data else None


def check_network_policy(variant, objs, labels):
    pol = one(objs, "NetworkPolicy", variant)
    if pol is None:
        return
    spec = pol["spec"]
    if not matches(spec["podSelector"].get("matchLabels"), labels) or \
            not spec["podSelector"].get("matchLabels"):
        err(f"{variant}: the NetworkPolicy does not select the exporter's pods")
    if sorted(spec.get("policyTypes") or []) != ["Egress", "Ingress"]:
        err(f"{variant}: the NetworkPolicy should restrict both Ingress and Egress")
    ingress = spec.get("ingress") or []
    if len(ingress) != 1:
        err(f"{variant}: the NetworkPolicy should have one ingress rule (Prometheus), has {len(ingress)}")
    for rule in ingress:
        peers = rule.get("from") or []
        names = [(p.get("namespaceSelector") or {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                 for p in peers]
        if not peers or None in names or any(set(p) != {"namespaceSelector"} for p in peers):
            err(f"{variant}: NetworkPolicy ingress must come from named namespaces only, not {peers}")
        if [(p.get("protocol"), p.get("port")) for p in rule.get("ports") or []] != [("TCP", "http-metrics")]:
            err(f"{variant}: NetworkPolicy ingress should open only TCP http-metrics")
    allowed = set()
    for rule in spec.get("egress") or []:
        cidrs = tuple(sorted((p.get("ipBlock") or {}).get("cidr") for p in rule.get("to") or []))
        if any(set(p) != {"ipBlock"} for p in rule.get("to") or []):
            err(f"{variant}: NetworkPolicy egress peers other than ipBlocks: {rule.get('to')}")
        ports = rule.get("ports") or []
        if not ports:
            err(f"{variant}: a NetworkPolicy egress rule allows every port")
        for p in ports:
            allowed.add((p.get("protocol"), p.get("port"), cidrs))
    if allowed != EGRESS:
        err(f"{variant}: NetworkPolicy egress {sorted(allowed, key=str)} is not DNS, HTTPS and "
            f"the Pod Identity agent: {sorted(EGRESS, key=str)}")


def check_shard_count_written_once(repo):
    """Renders a copy of deploy/ with other shard counts: --shard.total follows."""
    source = open(os.path.join(repo, VARIANTS["sharded"], "statefulset.yaml")).read()
    if SHARD_PLACEHOLDER not in source or re.search(r"--shard\.total=\d", source):
        err(f"sharded: statefulset.yaml should say {SHARD_PLACEHOLDER} (kustomization.yaml replaces it "
            "with spec.replicas), not a number")
        return
    if len(re.findall(r"^  replicas: \d+$", source, re.M)) != 1:
        err("sharded: statefulset.yaml should have one `  replicas: N` line")
        return
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(os.path.join(repo, "deploy"), os.path.join(tmp, "deploy"))
        sts_path = os.path.join(tmp, VARIANTS["sharded"], "statefulset.yaml")
        kust_path = os.path.join(tmp, VARIANTS["sharded"], "kustomization.yaml")
        kust = open(kust_path).read()
        for how, count in (("statefulset.yaml replicas", 5), ("kustomization.yaml replicas:", 7)):
            if count == 5:
                open(sts_path, "w").write(re.sub(r"^  replicas: \d+$", "  replicas: 5", source, flags=re.M))
            else:
                open(kust_path, "w").write(kust + "\nreplicas:\n  - name: iam-key-exporter\n    count: 7\n")
            try:
                objs = [o for o in yaml.safe_load_all(build(os.path.join(tmp, VARIANTS["sharded"]))) if o]
            except RuntimeError as e:
                err(f"sharded with {how} {count}: kustomize build failed: {e}")
                continue
            sts = [o for o in objs if o["kind"] == "StatefulSet"][0]
            total = [a for a in container_args(sts) if a.startswith("--shard.total=")]
            if sts["spec"].get("replicas") != count or total != [f"--shard.total={count}"]:
                err(f"sharded with {how} {count}: renders replicas {sts['spec'].get('replicas')} "
                    f"and {total}: the shard count is not written once")
    print("shard count written once: replicas 5 (statefulset.yaml) and 7 (kustomization.yaml "
          "replicas:) render --shard.total=5 and 7")


def main():
    repo, out_dir = sys.argv[1:3]
    n = check_kustomizations(repo)
    rendered = {v: render(repo, v, p, out_dir) for v, p in VARIANTS.items()}
    for variant, objs in rendered.items():
        if not objs:
            continue
        namespaces = {o["metadata"].get("namespace") for o in objs}
        if len(namespaces) != 1 or None in namespaces:
            err(f"{variant}: objects in namespaces {namespaces}: set one namespace in the variant")
    if rendered["single"]:
        dep = one(rendered["single"], "Deployment", "single")
        if dep:
            check_workload("single", rendered["single"], dep)
            if dep["spec"].get("replicas") != 1:
                err("single: the Deployment must have 1 replica")
            if any(a.startswith(SHARD_FLAGS) for a in container_args(dep)):
                err("single: shard flags on the single-replica Deployment")
    if rendered["sharded"]:
        check_sharded(repo, "sharded", rendered["sharded"], rendered["single"])
        check_shard_count_written_once(repo)
    for e in errors:
        print(e)
    if errors:
        return 1
    for v, objs in rendered.items():
        kinds = ", ".join(sorted(o["kind"] for o in objs))
        print(f"{v} ({VARIANTS[v]}): {len(objs)} objects: {kinds}")
    print(f"{n} kustomizations reference existing files only; rendered variants are consistent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
