// Entry of the matrix process (often inside `unshare --net`):
//   node --import tsx benchmarks/talk/run-matrix.ts CONFIG.json RESULTS.json
import { readFileSync, writeFileSync } from "node:fs";
import { runMatrix, type MatrixConfig } from "./matrix.ts";

const [configPath, resultsPath] = process.argv.slice(2);
if (configPath === undefined || resultsPath === undefined) {
  process.stderr.write("usage: run-matrix.ts CONFIG.json RESULTS.json\n");
  process.exit(2);
}
const config = JSON.parse(readFileSync(configPath, "utf8")) as MatrixConfig;
const results = await runMatrix(config, (line) => process.stderr.write(`  talk: ${line}\n`));
writeFileSync(resultsPath, JSON.stringify(results));
