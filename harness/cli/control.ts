// `twinvm status`, `twinvm promote` and `twinvm exec`: talk to running nodes
// through their control sockets in the run directory.
import { readdirSync } from "node:fs";
import { callControl, type NodeStatus } from "../control-socket.ts";
import { controlSocketPath, defaultRunDir } from "../run-dir.ts";
import { CliError, parseOptions, parseOptionsAndOperands, UsageError, type Subcommand } from "./args.ts";
import { MAX_COMMAND_CHARS } from "../control-request.ts";
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
  const answers = await Promise.all(nodeNames(runDir).map((name) => callControl<NodeStatus>(controlSocketPath(runDir, name), { type: "status" }, 3000).catch(() => undefined)));
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
    const statuses = values.node !== undefined ? [await callControl<NodeStatus>(controlSocketPath(runDir, values.node), { type: "status" })] : await liveStatuses(runDir);
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
    await callControl(controlSocketPath(runDir, name), { type: "promote" }, 60_000);
    const after = await callControl<NodeStatus>(controlSocketPath(runDir, name), { type: "status" });
    process.stdout.write(`${name}: ${after.metrics?.state ?? after.phase}${after.metrics?.failoverMs !== undefined ? `, took over in ${after.metrics.failoverMs.toFixed(0)} ms` : ""}\n`);
    return 0;
  },
};

const EXEC_USAGE = `Usage: twinvm exec [--node NAME] [--timeout SECONDS] [--json] [--run-dir DIR] [--] COMMAND...

Runs COMMAND (its words joined by spaces: one shell command line, at most ${MAX_COMMAND_CHARS}
characters) in the guest's shell on the node that runs the guest, prints what it
printed, and exits with its exit code. Without --node: the one running node whose
guest runs there (the primary, or the secondary after a takeover).

Options:
  --timeout SECONDS  give up after this long (default 60)
  --json          print {"output": ..., "exitCode": N} instead (and exit 0)
${COMMON_HELP}

twinvm's own errors (no such node, a node whose guest does not run there, a timeout)
exit 1 with a message on stderr, like a command that failed in the guest: use --json
to tell them apart.
`;

export const execCommand: Subcommand = {
  name: "exec",
  summary: "run a shell command in the guest of a running node",
  usage: EXEC_USAGE,
  async run(argv) {
    const { values, operands } = parseOptionsAndOperands(argv, { ...CONTROL_OPTIONS, timeout: { type: "string" }, json: { type: "boolean" } });
    if (values.help) return printUsage(EXEC_USAGE);
    const command = operands.join(" ");
    if (command.trim() === "") throw new UsageError("COMMAND is missing");
    if (command.length > MAX_COMMAND_CHARS) throw new UsageError(`COMMAND is ${command.length} characters; at most ${MAX_COMMAND_CHARS} fit on the guest shell's line`);
    if (/[\r\n]/.test(command)) throw new UsageError("COMMAND must be a single line");
    const timeoutSeconds = values.timeout === undefined ? 60 : Number(values.timeout);
    if (!Number.isFinite(timeoutSeconds) || timeoutSeconds <= 0) throw new UsageError(`--timeout: expected a positive number of seconds, got ${JSON.stringify(values.timeout)}`);
    const runDir = values["run-dir"] ?? defaultRunDir();
    let name = values.node;
    if (name === undefined) {
      const runners = (await liveStatuses(runDir)).filter((s) => s.runsGuest);
      if (runners.length !== 1) {
        throw new CliError(`${runners.length === 0 ? "no running node runs a guest" : `${runners.length} nodes run a guest (${runners.map((s) => s.name).join(", ")})`} in ${runDir}; name one with --node`);
      }
      name = runners[0]!.name;
    }
    const timeoutMs = timeoutSeconds * 1000;
    // The node gives up at timeoutMs; the socket waits a little longer for that answer.
    const result = await callControl<{ output: string; exitCode: number }>(controlSocketPath(runDir, name), { type: "exec", command, timeoutMs }, timeoutMs + 5000);
    if (values.json) {
      process.stdout.write(JSON.stringify(result) + "\n");
      return 0;
    }
    process.stdout.write(result.output);
    return result.exitCode;
  },
};

function statusTable(status: NodeStatus): string {
  const rows: [string, string][] = [
    ["node", `${status.name} (${status.role}${status.startedAs !== status.role ? `, started as ${status.startedAs}` : ""}, pid ${status.pid})`],
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
