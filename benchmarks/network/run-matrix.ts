// Entry of the network matrix process, inside `unshare --net` when the links are shaped
// (network.bench.ts starts it):
//   node --import tsx benchmarks/network/run-matrix.ts CONFIG.json RESULTS.json
// It boots the guest template itself (the namespace's own loopback is where its pairs and
// their gateways live) and removes it at the end.
import { readFileSync, writeFileSync } from "node:fs";
import { prepareNamespace } from "./link-shaping.ts";
import { networkTemplate } from "./guest.ts";
import { runNetworkMatrix, type NetworkMatrixConfig } from "./matrix.ts";

const [configPath, resultsPath] = process.argv.slice(2);
if (configPath === undefined || resultsPath === undefined) {
  process.stderr.write("usage: run-matrix.ts CONFIG.json RESULTS.json\n");
  process.exit(2);
}
const config = JSON.parse(readFileSync(configPath, "utf8")) as NetworkMatrixConfig;
const log = (line: string) => process.stderr.write(`  network: ${line}\n`);
if (config.shaping === "netns-tc") prepareNamespace();
log("booting the guest template (services on ports 7, 9, 19)");
const template = await networkTemplate();
try {
  const results = await runNetworkMatrix(template, config, log);
  writeFileSync(resultsPath, JSON.stringify(results));
} finally {
  await template.dispose();
}
