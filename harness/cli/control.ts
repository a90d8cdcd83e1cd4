// `twinvm status`, `promote`, `exec`, `verify` and `migrate`: talk to running nodes
// through their control sockets in the run directory.
import { readdirSync } from "node:fs";
import { callControl, type NodeStatus } from "../control-socket.ts";
import { controlSocketPath, defaultRunDir } from "../run-dir.ts";
import { CliError, parseOptions, parseOptionsAndOperands, UsageError, type Subcommand } from "./args.ts";
import { MAX_COMMAND_CHARS, type NodeInspection } from "../control-request.ts";
import { printUsage } from "./primary.ts";
import { formatBytes } from "./progress.ts";
import { BYTE_CATEGORIES } from "../../replication/protocol/frames.ts";
import { describeUplinkState } from "../../replication/network/uplink.ts";
import type { AreaReport, VerifyReport } from "../../replication/engine/consistency-check.ts";
import type { MigrateResult } from "../replica-node.ts";

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
    return readdirSync(runDir)
      .filter((f) => f.endsWith(".sock"))
      .map((f) => f.slice(0, -".sock".length))
      .sort();
  } catch {
    return [];
  }
}

async function liveStatuses(runDir: string): Promise<NodeStatus[]> {
  const answers = await Promise.all(
    nodeNames(runDir).map((name) => callControl<NodeStatus>(controlSocketPath(runDir, name), { type: "status" }, 3000).catch(() => undefined)),
  );
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
    const statuses =
      values.node !== undefined ? [await callControl<NodeStatus>(controlSocketPath(runDir, values.node), { type: "status" })] : await liveStatuses(runDir);
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
    const name = await theNode(runDir, values.node, (s) => s.role === "secondary" && s.metrics?.state !== "active", [
      "no running secondary",
      "running secondaries",
    ]);
    await callControl(controlSocketPath(runDir, name), { type: "promote" }, 60_000);
    const after = await callControl<NodeStatus>(controlSocketPath(runDir, name), { type: "status" });
    process.stdout.write(
      `${name}: ${after.metrics?.state ?? after.phase}${after.metrics?.failoverMs !== undefined ? `, took over in ${after.metrics.failoverMs.toFixed(0)} ms` : ""}\n`,
    );
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
    if (command.length > MAX_COMMAND_CHARS)
      throw new UsageError(`COMMAND is ${command.length} characters; at most ${MAX_COMMAND_CHARS} fit on the guest shell's line`);
    if (/[\r\n]/.test(command)) throw new UsageError("COMMAND must be a single line");
    const timeoutSeconds = values.timeout === undefined ? 60 : Number(values.timeout);
    if (!Number.isFinite(timeoutSeconds) || timeoutSeconds <= 0)
      throw new UsageError(`--timeout: expected a positive number of seconds, got ${JSON.stringify(values.timeout)}`);
    const runDir = values["run-dir"] ?? defaultRunDir();
    const name = await theNode(runDir, values.node, (s) => s.runsGuest, ["no running node runs a guest", "nodes run a guest"]);
    const timeoutMs = timeoutSeconds * 1000;
    // The node gives up at timeoutMs; the socket waits a little longer for that answer.
    const result = await callControl<{ output: string; exitCode: number }>(
      controlSocketPath(runDir, name),
      { type: "exec", command, timeoutMs },
      timeoutMs + 5000,
    );
    if (values.json) {
      process.stdout.write(JSON.stringify(result) + "\n");
      return 0;
    }
    process.stdout.write(result.output);
    return result.exitCode;
  },
};

const INSPECT_USAGE = `Usage: twinvm inspect [--node NAME] [--run-dir DIR]

Prints, as JSON, what the guest of a running node is doing now, for a guest that stopped
answering: the engine's state and what it holds back (guest requests waiting for a sync,
console bytes waiting for output commit); the CPU (halted, interrupts enabled, the
interrupt controllers' requested/in-service/enabled/high IRQ masks) and the guest's
instruction count (inspect twice: does it advance?); for each disk its status, ISR, INTx
pin and IRQ level, queue indices (the driver's avail.idx and used.idx against the
device's), and every request in flight with its age and whether its disk I/O and its
replication gate are done; and the last lines of the guest's console, whatever output
commit has released. Without --node: the one running node whose guest runs there.

Options:
${COMMON_HELP}
`;

export const inspectCommand: Subcommand = {
  name: "inspect",
  summary: "what a node's guest is doing now (CPU, interrupts, disk requests in flight), as JSON",
  usage: INSPECT_USAGE,
  async run(argv) {
    const values = parseOptions(argv, CONTROL_OPTIONS);
    if (values.help) return printUsage(INSPECT_USAGE);
    const runDir = values["run-dir"] ?? defaultRunDir();
    const name = await theNode(runDir, values.node, (s) => s.runsGuest, ["no running node runs a guest", "nodes run a guest"]);
    process.stdout.write(JSON.stringify(await callControl<NodeInspection>(controlSocketPath(runDir, name), { type: "inspect" }), null, 2) + "\n");
    return 0;
  },
};

/** The node named, or else the only running one that `matches`; `[none, many]` word the error. */
async function theNode(runDir: string, named: string | undefined, matches: (status: NodeStatus) => boolean, [none, many]: [string, string]): Promise<string> {
  if (named !== undefined) return named;
  const found = (await liveStatuses(runDir)).filter(matches);
  if (found.length !== 1) {
    throw new CliError(`${found.length === 0 ? none : `${found.length} ${many} (${found.map((s) => s.name).join(", ")})`} in ${runDir}; name one with --node`);
  }
  return found[0]!.name;
}

/** The node named, or else the only one whose guest runs under a protected primary engine. */
const protectedPrimary = (runDir: string, named: string | undefined) =>
  theNode(runDir, named, (s) => s.runsGuest && s.metrics?.state === "protected", ["no running node has a protected guest", "nodes have a protected guest"]);

const VERIFY_USAGE = `Usage: twinvm verify [--node NAME] [--repair] [--json] [--run-dir DIR]

Checks that the secondary's replica equals the guest: RAM as of a sync, and every disk,
compared range by range by digests while the guest runs. Reports the differing ranges;
with --repair, sends the primary's contents for them and checks them again. Exits 0 when
nothing differs (after repair), 1 when something does.

Options:
  --repair        repair the replica where it differs
  --json          print the report as JSON
${COMMON_HELP}
`;

/** Verification waits for one sync per 4 MiB range: generous for big disks on a slow link. */
const VERIFY_TIMEOUT_MS = 30 * 60_000;

export const verifyCommand: Subcommand = {
  name: "verify",
  summary: "compare the replica with the guest (RAM and disks), and repair it",
  usage: VERIFY_USAGE,
  async run(argv) {
    const values = parseOptions(argv, { ...CONTROL_OPTIONS, repair: { type: "boolean" }, json: { type: "boolean" } });
    if (values.help) return printUsage(VERIFY_USAGE);
    const runDir = values["run-dir"] ?? defaultRunDir();
    const name = await protectedPrimary(runDir, values.node);
    const report = await callControl<VerifyReport>(controlSocketPath(runDir, name), { type: "verify", repair: values.repair === true }, VERIFY_TIMEOUT_MS);
    const areas = [...(report.ram ? [report.ram] : []), ...report.disks];
    const clean = areas.every((area) => area.differing.length === 0);
    if (values.json) process.stdout.write(JSON.stringify(report, null, 2) + "\n");
    else process.stdout.write(`${areas.map(areaLine).join("")}${clean ? "the replica matches" : "the replica differs"} (${(report.ms / 1000).toFixed(1)} s)\n`);
    return clean ? 0 : 1;
  },
};

function areaLine(area: AreaReport): string {
  const ranges = (list: readonly { offset: number; length: number }[]) =>
    list
      .slice(0, 4)
      .map((r) => `${r.offset}+${r.length}`)
      .join(", ") + (list.length > 4 ? `, ... (${list.length} in all)` : "");
  const parts = [`${area.name} (${formatBytes(area.bytes)}):`, area.differing.length === 0 ? "same" : `differs at ${ranges(area.differing)}`];
  if (area.repaired.length > 0) parts.push(`repaired ${ranges(area.repaired)}`);
  if (area.inconclusive.length > 0) parts.push(`not compared (the guest kept writing) ${ranges(area.inconclusive)}`);
  return parts.join(" ") + "\n";
}

const MIGRATE_USAGE = `Usage: twinvm migrate --to ws://HOST:PORT [--node NAME] [--stop-and-copy] [--json] [--run-dir DIR]

Moves the running guest to another node with its own disks: a secondary listening at
the URL (\`twinvm secondary --listen PORT\`, same secret). RAM (and any disk the target
cannot prove by digest it holds) is copied while the guest runs, the I/O-log syncs keep
the target current, then the guest stops here, the target resumes it, and this node
exits. The secondary that protected the guest here is let go (it keeps its replica);
when the target is in the same run directory it is told to protect the guest with it,
so the guest stays protected.

Options:
  --to URL          the target secondary's ws:// URL
  --stop-and-copy   stop the guest for the whole copy (the baseline, for comparison)
  --json            print the migration report as JSON
${COMMON_HELP}
`;

export const migrateCommand: Subcommand = {
  name: "migrate",
  summary: "move the running guest to another node (live migration)",
  usage: MIGRATE_USAGE,
  async run(argv) {
    const values = parseOptions(argv, { ...CONTROL_OPTIONS, to: { type: "string" }, "stop-and-copy": { type: "boolean" }, json: { type: "boolean" } });
    if (values.help) return printUsage(MIGRATE_USAGE);
    const to = values.to;
    if (to === undefined) throw new UsageError("--to is required");
    if (!/^wss?:\/\/\S+$/.test(to)) throw new UsageError(`--to: expected a ws:// or wss:// URL, got ${JSON.stringify(to)}`);
    const runDir = values["run-dir"] ?? defaultRunDir();
    const name = await protectedPrimary(runDir, values.node);
    const target = (await liveStatuses(runDir)).find((s) => s.listenUrl === to);
    const result = await callControl<MigrateResult>(
      controlSocketPath(runDir, name),
      { type: "migrate", to, stopAndCopy: values["stop-and-copy"] === true },
      VERIFY_TIMEOUT_MS,
    );
    let protectedBy: string | undefined;
    let protectError: string | undefined;
    if (result.releasedSecondary !== undefined && target !== undefined) {
      try {
        await callControl(controlSocketPath(runDir, target.name), { type: "protect", connect: result.releasedSecondary }, 10 * 60_000);
        protectedBy = result.releasedSecondary;
      } catch (error) {
        protectError = (error as Error).message;
      }
    }
    if (values.json) {
      process.stdout.write(JSON.stringify({ ...result, target: target?.name, protectedBy, protectError }, null, 2) + "\n");
    } else {
      const downtime = result.downtimeMs === undefined ? "unknown" : `${result.downtimeMs.toFixed(0)} ms`;
      process.stdout.write(
        `${name}: the guest runs on ${target?.name ?? to} now: ${(result.totalMs / 1000).toFixed(1)} s in all (copy ${(result.copyMs / 1000).toFixed(1)} s), stopped for ${downtime}, ${formatBytes(result.bytes)} sent\n`,
      );
      if (protectedBy !== undefined) process.stdout.write(`${target!.name} protects the guest with ${protectedBy}\n`);
      else if (protectError !== undefined)
        process.stdout.write(`${target!.name} could not protect the guest with ${result.releasedSecondary}: ${protectError}\n`);
      else if (result.releasedSecondary !== undefined)
        process.stdout.write(
          `the guest is unprotected on the target: the secondary at ${result.releasedSecondary} keeps its replica and can protect it again\n`,
        );
    }
    return protectError === undefined ? 0 : 1;
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
    rows.push([
      "sync round trip",
      `last ${m.roundTripMs.lastMs.toFixed(1)} ms, mean ${m.roundTripMs.meanMs.toFixed(1)} ms, max ${m.roundTripMs.maxMs.toFixed(1)} ms`,
    ]);
    if (m.initialSync) rows.push(["initial sync", `${formatBytes(m.initialSync.bytes)} in ${(m.initialSync.ms / 1000).toFixed(1)} s`]);
    if (m.failoverMs !== undefined) rows.push(["takeover", `${m.failoverMs.toFixed(0)} ms`]);
    for (const kind of ["console", "frame"] as const) {
      const c = m.output?.[kind];
      if (c === undefined || c.held + c.released === 0) continue;
      rows.push([
        kind === "console" ? "console output" : "network frames",
        `${c.held} held (${formatBytes(c.heldBytes)}), ${c.released} released (${formatBytes(c.releasedBytes)}), ${c.dropped} dropped`,
      ]);
    }
  }
  const network = status.network;
  if (network !== undefined) {
    const c = network.counters;
    const dropped = Object.values(c.egress.dropped).reduce((a, b) => a + b, 0) + Object.values(c.ingress.dropped).reduce((a, b) => a + b, 0);
    rows.push(["network gateway", `${network.gateway}: ${describeUplinkState(network.link)}`]);
    rows.push([
      "network traffic",
      `in ${c.ingress.frames} frames (${formatBytes(c.ingress.bytes)}), out ${c.egress.frames} frames (${formatBytes(c.egress.bytes)}), ${dropped} dropped`,
    ]);
  }
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}\n`).join("");
}
