// `twinvm pair`: the whole demo on one machine. A secondary and a primary node
// run as two child processes connected over loopback with a freshly generated
// secret; the terminal talks to the guest on whichever node runs it, so killing
// the primary (Ctrl-] k) shows the takeover without the user doing anything.
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { existingFile, parseChoice, parseOptions, parsePort, parseSize, type Subcommand } from "./args.ts";
import { checkMatchingDisks, createSparseImage, totalSize } from "./disks.ts";
import { LOSS_POLICIES, LOSS_POLICY_HELP, NODE_HELP, NODE_OPTIONS, ramBytes, sharedNodeConfig, startNode } from "./node-options.ts";
import { runNodeSession, stopNode, type LabeledNode } from "./node-session.ts";
import { printUsage } from "./primary.ts";
import { followPrimaryStartup } from "./startup-progress.ts";
import type { NodeProcess } from "../node-process.ts";

const PAIR_MODES = ["logging-replay", "dirty-block-copy"] as const;
const DEFAULT_DISK_SIZE = "64M";

const USAGE = `Usage: twinvm pair [options]

Runs a primary and a secondary as two local processes connected over loopback,
boots the guest on the primary, copies it to the secondary, and attaches the
guest's console to this terminal. Kill the primary and the console continues on
the secondary.

Options:
  --mode MODE             ${PAIR_MODES.join(" or ")} (default logging-replay)
  --disk FILE             the primary's disk image (repeat for more; default: one new
                          sparse image of --disk-size in a temporary folder)
  --secondary-disk FILE   the secondary's disk image, one per --disk (default: new sparse
                          images of the primary's sizes)
  --disk-size SIZE        size of the disk images created here (default ${DEFAULT_DISK_SIZE})
  --snapshot FILE         restore this machine snapshot on the primary instead of booting
  --port PORT             the secondary's loopback port (default 0: a free one)
  --name NAME             control sockets are NAME-primary and NAME-secondary (default pair)
${LOSS_POLICY_HELP}
${NODE_HELP}

Keys (after Ctrl-], also from piped stdin):
  k  kill the primary with SIGKILL: the secondary takes over, the console continues there
  p  promote the secondary (a manual failover; the primary is fenced)
  s  print the replication status
  q  quit (stops both nodes)
  ?  list the keys

Piped stdin (not a terminal) is sent to the guest a line at a time; when it ends,
twinvm waits until the console has been quiet for 1.5 s, then stops both nodes.
`;

export const pairCommand: Subcommand = {
  name: "pair",
  summary: "a primary and a secondary on this machine, console attached (the demo)",
  usage: USAGE,
  async run(argv) {
    const values = parseOptions(argv, {
      ...NODE_OPTIONS,
      mode: { type: "string" },
      "on-secondary-loss": { type: "string" },
      disk: { type: "string", multiple: true },
      "secondary-disk": { type: "string", multiple: true },
      "disk-size": { type: "string" },
      snapshot: { type: "string" },
      port: { type: "string" },
      name: { type: "string" },
    });
    if (values.help) return printUsage(USAGE);
    const onSecondaryLoss = parseChoice("--on-secondary-loss", values["on-secondary-loss"], LOSS_POLICIES, "continue");
    const mode = parseChoice("--mode", values.mode, PAIR_MODES, "logging-replay");
    const diskSize = parseSize("--disk-size", values["disk-size"] ?? DEFAULT_DISK_SIZE);
    const port = values.port === undefined ? 0 : parsePort("--port", values.port);
    const snapshotPath = values.snapshot === undefined ? undefined : existingFile("--snapshot", values.snapshot);
    const givenPrimaryDisks = (values.disk ?? []).map((path) => existingFile("--disk", path));
    const givenSecondaryDisks = (values["secondary-disk"] ?? []).map((path) => existingFile("--secondary-disk", path));
    const shared = sharedNodeConfig(values);
    const name = values.name ?? "pair";

    // The secret and any disks made here live in a private (0700) folder that goes away with the pair.
    const sessionDir = mkdtempSync(join(tmpdir(), "twinvm-pair-"));
    const nodes: NodeProcess[] = [];
    try {
      const secretFile = join(sessionDir, "secret");
      writeFileSync(secretFile, randomBytes(32).toString("hex"), { mode: 0o600 });
      const primaryDisks = givenPrimaryDisks.length > 0 ? givenPrimaryDisks : [createSparseImage(join(sessionDir, "primary-vda.img"), diskSize)];
      const secondaryDisks =
        givenSecondaryDisks.length > 0 ? givenSecondaryDisks : primaryDisks.map((path, i) => createSparseImage(join(sessionDir, `secondary-vd${String.fromCharCode(0x61 + i)}.img`), totalSize([path])));
      checkMatchingDisks(primaryDisks, secondaryDisks);

      const secondary = startNode({ role: "secondary", mode, disks: secondaryDisks, secretFile, listenPort: port, name: `${name}-secondary`, ...shared }, values.verbose);
      nodes.push(secondary);
      const url = await secondary.listeningUrl(60_000);
      process.stderr.write(`twinvm: secondary (pid ${secondary.child.pid}) listening on ${url}\n`);
      const primary = startNode({ role: "primary", mode, disks: primaryDisks, secretFile, snapshotPath, connect: url, name: `${name}-primary`, onSecondaryLoss, ...shared }, values.verbose);
      nodes.push(primary);
      process.stderr.write(`twinvm: primary (pid ${primary.child.pid}), ${mode}, ${primaryDisks.length} disk(s) of ${(totalSize(primaryDisks) / (1 << 20)).toFixed(0)} MiB\n`);
      await followPrimaryStartup(primary, { label: "primary", syncEstimateBytes: ramBytes(shared.memoryMiB) + totalSize(primaryDisks), replicated: true });
      await secondary.waitForState("replicating", 30_000);
      process.stderr.write("twinvm: console attached to the guest on the primary; Ctrl-] k kills the primary, Ctrl-] q quits, Ctrl-] ? lists the keys\n");
      return await attachPair(primary, secondary, values["no-status-line"] !== true);
    } finally {
      await Promise.all(nodes.map((node) => stopNode(node)));
      rmSync(sessionDir, { recursive: true, force: true });
    }
  },
};

function attachPair(primary: NodeProcess, secondary: NodeProcess, statusLine: boolean): Promise<number> {
  const primaryNode: LabeledNode = { label: "primary", node: primary };
  const secondaryNode: LabeledNode = { label: "secondary", node: secondary };
  const secondaryRuns = () => secondary.states.includes("active");
  const say = (text: string) => process.stderr.write(`\r\ntwinvm: ${text}\r\n`);
  void primary.input(new TextEncoder().encode("\n")); // a fresh prompt
  return runNodeSession({
    nodes: [primaryNode, secondaryNode],
    activeNode: () => (secondaryRuns() ? secondaryNode : primary.running && !primary.states.includes("fenced") ? primaryNode : undefined),
    statusNode: () => (secondaryRuns() || !primary.running ? secondaryNode : primaryNode),
    extraCommands: [
      {
        key: "k",
        help: "kill the primary (SIGKILL); the secondary takes over",
        run() {
          if (!primary.running) return say("the primary is not running");
          say(`killing the primary (pid ${primary.child.pid}) with SIGKILL; the secondary takes over...`);
          void primary.kill("SIGKILL");
        },
      },
      {
        key: "p",
        help: "promote the secondary now (manual failover)",
        run() {
          say("promoting the secondary...");
          secondary.request({ type: "promote" }).catch((error: unknown) => say(`promote: ${(error as Error).message}`));
        },
      },
    ],
    statusLine,
  });
}
