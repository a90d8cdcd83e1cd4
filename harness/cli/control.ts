// `twinvm status` and `twinvm promote`: talk to running nodes through their
// control sockets in the run directory.
import { readdirSync } from "node:fs";
import { callControl, type NodeStatus } from "../control-socket.ts";
import { controlSocketPath, defaultRunDir } from "../run-dir.ts";
import { CliError, parseOptions, type Subcommand } from "./args.ts";
import { printUsage } from "./primary.ts";
import { formatBytes } from "./progress.ts";
import { BYTE_CATEGORIES } from "../../replication/engine/metrics.ts";

const COMMON_HELP = `  --node NAME     the node's name (see \`twinvm status\`; pair nodes are pair-primary, pair-secondary)
  --run-dir DIR   where the nodes' control sockets are (default ${defaultRunDir()})
  -h, --help      show this help`;

const STATUS_USAGE = `Usage: twinvm status [--node NAME] [--json] [--run-dir DIR]

Shows the state and replication metrics of running nodes (all of them without --node).

Options:
  --json          print the status as JSON (an array without --node)
${COMMON_HELP}
`;

const PROMOTE_USAGE = `Usage: twinvm promote [--node NAME] [--run-dir DIR]

Manual failover: tells a running secondary to take over now. Without --node, the only
running secondary. The old primary, if alive, stops for good when it hears of it.

Options:
${COMMON_HELP}
`;

const CONTROL_OPTIONS = { node: { type: "string" }, "run-dir": { type: "string" }, help: { type: "boolean", short: "h" } } as const;

/** The names of nodes with a socket in the run directory (some may be stale). */
function nodeNames(runDir: string): string[] {
  try {
    return readdirSync(runDir).filter((f) => f.endsWith(".sock")).map((f) => f.slice(0, -".sock".length)).sort();
  } catch {
    return [];
  }
}

async function liveStatuses(runDir: string): Promise<NodeStatus[]> {
  const answers = await Promise.all(nodeNames(runDir).map((name) => callControl<NodeStatus>(controlSocketPath(runDir, name), "status", 3000).catch(() => undefined)));
  return answers.filter((s): s is NodeStatus => s !== undefined);
}

export const statusCommand: Subcommand = {
  name: "status",
  summary: "state and metrics of running nodes",
  usage: STATUS_USAGE,
  async run(argv) {
    const values = parseOptions(argv, { ...CONTROL_OPTIONS, json: { type: "boolean" } });
    if (values.help) return printUsage(STATUS_USAGE);
    const runDir = values["run-dir"] ?? defaultRunDir();
    const statuses = values.node !== undefined ? [await callControl<NodeStatus>(controlSocketPath(runDir, values.node), "status")] : await liveStatuses(runDir);
    if (values.json) {
      process.stdout.write(JSON.stringify(values.node !== undefined ? statuses[0] : statuses, null, 2) + "\n");
      return 0;
    }
    if (statuses.length === 0) throw new CliError(`no running node has a control socket in ${runDir}`);
    process.stdout.write(statuses.map(statusTable).join("\n"));
    return 0;
  },
};

export const promoteCommand: Subcommand = {
  name: "promote",
  summary: "make a running secondary take over now (manual failover)",
  usage: PROMOTE_USAGE,
  async run(argv) {
    const values = parseOptions(argv, CONTROL_OPTIONS);
    if (values.help) return printUsage(PROMOTE_USAGE);
    const runDir = values["run-dir"] ?? defaultRunDir();
    let name = values.node;
    if (name === undefined) {
      const secondaries = (await liveStatuses(runDir)).filter((s) => s.role === "secondary" && s.metrics?.state !== "active");
      if (secondaries.length !== 1) {
        throw new CliError(`${secondaries.length === 0 ? "no running secondary" : `${secondaries.length} running secondaries (${secondaries.map((s) => s.name).join(", ")})`} in ${runDir}; name one with --node`);
      }
      name = secondaries[0]!.name;
    }
    await callControl(controlSocketPath(runDir, name), "promote", 60_000);
    const after = await callControl<NodeStatus>(controlSocketPath(runDir, name), "status");
    process.stdout.write(`${name}: ${after.metrics?.state ?? after.phase}${after.metrics?.failoverMs !== undefined ? `, took over in ${after.metrics.failoverMs.toFixed(0)} ms` : ""}\n`);
    return 0;
  },
};

function statusTable(status: NodeStatus): string {
  const rows: [string, string][] = [
    ["node", `${status.name} (${status.role}, pid ${status.pid})`],
    ["state", status.metrics?.state ?? status.phase],
  ];
  const m = status.metrics;
  if (m) {
    rows.push(["epoch", String(m.epoch)], ["uptime", `${(m.uptimeMs / 1000).toFixed(0)} s`], ["syncs", `${m.syncs} (${m.pagesPerSync.toFixed(1)} pages/sync)`]);
    rows.push(["writes synced", `${m.writesSynced} (${m.inlineWrites} inline)`]);
    for (const category of BYTE_CATEGORIES) rows.push([`bytes ${category}`, formatBytes(m.bytes[category])]);
    rows.push(["guest pause", `last ${m.pauseMs.lastMs.toFixed(1)} ms, mean ${m.pauseMs.meanMs.toFixed(1)} ms, max ${m.pauseMs.maxMs.toFixed(1)} ms`]);
    rows.push(["sync round trip", `last ${m.roundTripMs.lastMs.toFixed(1)} ms, mean ${m.roundTripMs.meanMs.toFixed(1)} ms, max ${m.roundTripMs.maxMs.toFixed(1)} ms`]);
    if (m.initialSync) rows.push(["initial sync", `${formatBytes(m.initialSync.bytes)} in ${(m.initialSync.ms / 1000).toFixed(1)} s`]);
    if (m.failoverMs !== undefined) rows.push(["takeover", `${m.failoverMs.toFixed(0)} ms`]);
  }
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}\n`).join("");
}
