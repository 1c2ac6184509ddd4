// Validate prometheus-operator objects (ServiceMonitor, PrometheusRule) against the
// schemas of the CRDs, as compiled into the npm package
// @kubernetes-models/prometheus-operator, and reject unknown fields (like
// `kubectl apply --validate=strict`): the compiled validators check types, required
// fields, enums and formats, and read every field their schema declares, so a field
// of the object that the validator never read is not in the schema.
//
//   node validate_crds.mjs PACKAGE_DIR OBJECTS.json
//
// PACKAGE_DIR: node_modules/@kubernetes-models/prometheus-operator
// OBJECTS.json: a JSON array of objects. Exit 1 on any error.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [pkgDir, objectsFile] = process.argv.slice(2);
const SCHEMAS = {
  "monitoring.coreos.com/v1/ServiceMonitor": "ComGithubPrometheusOperatorPrometheusOperatorPkgApisMonitoringV1ServiceMonitor.js",
  "monitoring.coreos.com/v1/PrometheusRule": "ComGithubPrometheusOperatorPrometheusOperatorPkgApisMonitoringV1PrometheusRule.js",
};

// A proxy that records, per object, which keys the validator read and whether it
// listed the keys (maps such as labels are iterated, not read field by field).
function track(value, path, seen) {
  if (value === null || typeof value !== "object") return value;
  const entry = { path, value, read: new Set(), listed: false };
  seen.push(entry);
  const children = new Map();
  return new Proxy(value, {
    get(target, key, receiver) {
      if (typeof key !== "string") return Reflect.get(target, key, receiver);
      entry.read.add(key);
      if (!Object.prototype.hasOwnProperty.call(target, key)) return Reflect.get(target, key, receiver);
      if (!children.has(key)) children.set(key, track(target[key], `${path}/${key}`, seen));
      return children.get(key);
    },
    ownKeys(target) {
      entry.listed = true;
      return Reflect.ownKeys(target);
    },
  });
}

const objects = JSON.parse(readFileSync(objectsFile, "utf8"));
let failed = 0;
for (const obj of objects) {
  const kind = `${obj.apiVersion}/${obj.kind}`;
  const name = `${obj.kind}/${obj.metadata?.namespace ?? ""}/${obj.metadata?.name ?? "?"}`;
  const file = SCHEMAS[kind];
  const errors = [];
  if (!file) {
    errors.push(`no schema for ${kind}`);
  } else {
    const { validate } = await import(pathToFileURL(join(pkgDir, "_schemas", file)).href);
    const seen = [];
    if (!validate(track(obj, "", seen))) {
      for (const e of validate.errors ?? []) {
        errors.push(`${e.instancePath || "/"}: ${e.keyword} ${JSON.stringify(e.params)}`);
      }
    }
    for (const s of seen) {
      if (Array.isArray(s.value) || s.listed) continue;
      for (const key of Object.keys(s.value)) {
        if (!s.read.has(key)) errors.push(`${s.path}/${key}: unknown field (not in the CRD schema)`);
      }
    }
  }
  const unique = [...new Set(errors)];
  if (unique.length) {
    failed++;
    console.log(`${name}: INVALID`);
    for (const e of unique) console.log(`  ${e}`);
  } else {
    console.log(`${name}: valid against the ${kind} CRD schema (strict)`);
  }
}
if (objects.length === 0) {
  console.log("no objects to validate");
  failed++;
}
process.exit(failed ? 1 : 0);
