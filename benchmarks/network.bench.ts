// `npm run bench -- network`: the network under replication. A real guest (its busybox nc
// services: echo, sink, source) behind the real gateway (passt), reached by a host client on
// a forwarded loopback port: a 1-byte TCP ping-pong and a stream each way, for the
// unreplicated node and for both disk modes in both sync modes, with the replication link
// unshaped and shaped like the talk's 1 Gbit/s and 100 Mbit/s Ethernet (the client's path
// stays on plain loopback). Per-sync figures from the primary's metrics and sync events.
// The guest runs in a private network namespace (root, `unshare --net`) so that tc can shape
// its loopback; without one only the unshaped rows are measured, and the results say so.
// First, the gateway alone (benchmarks/network/gateway-alone.ts); last, the takeover stalls
// (network-takeover.bench.ts records them on their own too).
import { writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { BenchContext, BenchReport } from "./run.ts";
import { runMatrixInChild } from "./matrix-process.ts";
import { canUseNamespaces, LINKS } from "./talk/links.ts";
import { groupedBars, stackSvgs } from "./talk/charts.ts";
import { gatewayAlone } from "./network/gateway-alone.ts";
import { shapingDescription } from "./network/link-shaping.ts";
import type { NetworkMatrixConfig, NetworkMatrixResults } from "./network/matrix.ts";
import { median } from "./network/matrix.ts";
import { configName, TARGET_CONFIGS } from "./network/targets.ts";
import { inMiBps, outMiBps, rttMedian, summarizeNetwork } from "./network/summary.ts";
import { runTakeovers, takeoverTable, TAKEOVER_DESCRIPTION } from "./network-takeover.bench.ts";
import { networkTemplate } from "./network/guest.ts";

const here = fileURLToPath(new URL(".", import.meta.url));

export const MATRIX: Omit<NetworkMatrixConfig, "shaping" | "links"> = {
  configs: [...TARGET_CONFIGS],
  rounds: 3,
  pings: 300,
  pingBudgetMs: 8000,
  streamBytes: 4 << 20,
};

/** Runs the matrix in a child process: inside `unshare --net` when the links can be shaped. */
function runMatrixProcess(config: NetworkMatrixConfig, log: (line: string) => void): Promise<NetworkMatrixResults> {
  return runMatrixInChild<NetworkMatrixConfig, NetworkMatrixResults>(config, {
    script: join(here, "network", "run-matrix.ts"),
    name: "network",
    inNamespace: config.shaping === "netns-tc",
    log,
  });
}

function chart(results: NetworkMatrixResults, links: typeof LINKS): string {
  const series = TARGET_CONFIGS.map(configName);
  const value = (link: string, name: string, pick: (c: NetworkMatrixResults["cells"][number]) => number) => {
    const cells = results.cells.filter((c) => c.link === link && c.name === name);
    return cells.length === 0 ? undefined : median(cells.map(pick));
  };
  const rtt = groupedBars(
    "1-byte TCP round trip through the guest (median)",
    series,
    links.map((link) => ({ label: link.name, values: series.map((name) => value(link.name, name, rttMedian)) })),
    "ms",
  );
  const streams = groupedBars(
    "TCP stream through the guest, 4 MiB each way (median)",
    series,
    links.flatMap((link) => [
      { label: `in, ${link.name}`, values: series.map((name) => value(link.name, name, inMiBps)) },
      { label: `out, ${link.name}`, values: series.map((name) => value(link.name, name, outMiBps)) },
    ]),
    "MiB/s",
  );
  return stackSvgs([rtt, streams]);
}

const LITERATURE = [
  "**Beside Remus and COLO.** Remus checkpoints the whole VM at up to 40 times a second (every 25 ms) and holds every transmitted packet until the checkpoint " +
    "that produced it is on the backup ([Cully et al., NSDI 2008](https://www.usenix.org/legacy/event/nsdi08/tech/full_papers/cully/cully_html/index.html)): " +
    "a request-response pays the wait for the epoch to end plus the checkpoint's round trip, on average over half an epoch (12.5 ms at 25 ms epochs) on top of the network. " +
    "RemusDB measured up to 32% overhead for database workloads under Remus and 3 s of downtime at failover ([Minhas et al., VLDB Journal 2013](https://pdfslide.net/documents/remusdb-transparent-high-availability-for-database-systems-kmsalempubsremusdbvldbjpdf.html)). " +
    "COLO runs both VMs and releases a response as soon as the secondary's matches it, checkpointing only on a mismatch, so that identical responses leave " +
    "with almost no added latency ([Dong et al., SoCC 2013](https://documents.pub/document/colo-coarse-grained-lock-stepping-virtual-machines-for-sm2283paperssocc13pdf.html)). " +
    "twinvm syncs on demand, Kemari's way: the guest's frame asks for a sync at once, so a round trip pays one sync (the capture and its acknowledgement), " +
    "not an epoch: the table above gives what that costs here.",
].join("\n\n");

export default async function network(context: BenchContext): Promise<BenchReport> {
  const loadAtStart = loadavg()[0]!;
  context.log("the gateway alone (no guest)");
  const alone = await gatewayAlone(context);

  const namespaces = canUseNamespaces();
  const links = namespaces.ok ? [...LINKS] : LINKS.filter((link) => link.bitsPerSecond === undefined);
  if (!namespaces.ok) context.log(`no private network namespace (${namespaces.why}): unshaped links only`);
  const config: NetworkMatrixConfig = { ...MATRIX, shaping: namespaces.ok ? "netns-tc" : "unshaped-only", links };
  const results = await runMatrixProcess(config, context.log);
  const summary = summarizeNetwork(results, links, config.configs);
  writeFileSync(join(here, "results", "network.svg"), chart(results, links));
  const loadAfterMatrix = loadavg()[0]!;

  context.log("takeover stalls (also: npm run bench -- network-takeover)");
  const template = await networkTemplate();
  let takeovers;
  try {
    takeovers = await runTakeovers(template, Number(process.env.TWINVM_BENCH_TAKEOVERS ?? 20), context.log);
  } finally {
    await template.dispose();
  }
  const loadAtEnd = loadavg()[0]!;

  const description = [
    "The network under replication, end to end: the default guest (128 MiB, virtio-net, Linux's TCP) with busybox `nc` services started at boot " +
      "(echo: `nc -ll -p 7 -e cat`; sink: `nc -ll -p 9 -e wc -c`; source: `head -c N /dev/zero` on port 19), restored from one template snapshot; the real gateway " +
      "(passt) in the benchmark's process forwards free loopback ports to them; a host client measures a 1-byte ping-pong (each byte waits for its echo, " +
      `up to ${MATRIX.pings} or ${MATRIX.pingBudgetMs / 1000} s), a ${MATRIX.streamBytes / (1 << 20)} MiB stream into the guest (until the sink's count comes back) ` +
      `and ${MATRIX.streamBytes / (1 << 20)} MiB out of it. Targets: the guest unreplicated (one node process with \`mode: none\`, frames straight out, as \`twinvm run --forward\`), ` +
      "and replicated pairs of the test API (`startPair`: two node processes, the link through the fault proxy) in both disk modes and both sync modes; " +
      "output commit holds every frame the guest sends until the secondary acknowledged the sync covering it. Each target warms up first (v86 compiles the guest's network path as it meets it). " +
      `Links: ${config.shaping === "netns-tc" ? shapingDescription() : `unshaped only (${namespaces.ok ? "" : namespaces.why})`}; the shaped bytes counted by the token bucket are in the JSON. ` +
      `${config.rounds} rounds; the order of targets and of links rotates from round to round.`,
    `Load average (1 min, 2 cores shared with other work): ${loadAtStart.toFixed(1)} at the start, ${loadAfterMatrix.toFixed(1)} after the matrix, ${loadAtEnd.toFixed(1)} at the end; each cell's is in the JSON.`,
  ].join("\n\n");

  const failures = [...results.failures, ...takeovers.failures];
  const table = [
    "## The guest's network under replication",
    summary.tables,
    "Chart: [round trip and streams by target per link](network.svg).",
    "## A client's stall at a takeover",
    TAKEOVER_DESCRIPTION,
    takeoverTable(takeovers),
    "## Context",
    LITERATURE,
    "## The gateway alone (no guest)",
    alone.description,
    alone.table,
    ...(failures.length > 0 ? ["## Failures", failures.map((f) => `- ${f}`).join("\n")] : []),
  ].join("\n\n");
  return {
    description,
    table,
    data: {
      matrix: { config, summary: summary.data, cells: results.cells, startSeconds: results.startSeconds, failures: results.failures },
      takeovers,
      gatewayAlone: alone.data,
      load: { start: loadAtStart, afterMatrix: loadAfterMatrix, end: loadAtEnd },
    },
  };
}
