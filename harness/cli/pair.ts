// `twinvm pair`: the whole demo on one machine, on the test API's Pair. A secondary
// and a primary node run as two child processes connected over loopback with a
// freshly generated secret; the terminal talks to the guest on whichever node runs
// it, so killing the primary (Ctrl-] k) shows the takeover without the user doing
// anything; then a fresh secondary protects the guest again (unless --no-reprotect).
import type { Pair, PairEvent } from "../testing/pair.ts";
import type { DiskSpec, PairOptions } from "../testing/options.ts";
import { existingFile, parseChoice, parseMilliseconds, parseOptions, parseSize, UsageError, type Subcommand } from "./args.ts";
import { checkMatchingDisks, totalSize } from "./disks.ts";
import { GUEST_HELP, GUEST_OPTIONS, guestOptions } from "./guest-options.ts";
import {
  FORWARD_HELP,
  LOSS_POLICIES,
  LOSS_POLICY_HELP,
  NODE_HELP,
  NODE_OPTIONS,
  parseForwardOptions,
  ramBytes,
  sharedNodeConfig,
  SYNC_MODE_HELP,
  SYNC_MODES,
  MAX_OUTPUT_COALESCE_MS,
  MAX_SYNC_INTERVAL_MS,
} from "./node-options.ts";
import { DEFAULT_SYNC_MODE, type SecondaryLossPolicy } from "../../replication/engine/primary/states.ts";
import { runNodeSession, type ConsoleSource } from "./node-session.ts";
import { printUsage } from "./primary.ts";
import { followPrimaryStartup } from "./startup-progress.ts";
import type { StatusSampler } from "./status-line.ts";

const PAIR_MODES = ["logging-replay", "dirty-block-copy"] as const;
const DEFAULT_DISK_SIZE = "64M";

const USAGE = `Usage: twinvm pair [options]

Runs a primary and a secondary as two local processes connected over loopback,
boots the guest on the primary, copies it to the secondary, and attaches the
guest's console to this terminal. Kill the primary and the console continues on
the secondary, which a fresh secondary then protects again.

Options:
  --mode MODE             ${PAIR_MODES.join(" or ")} (default logging-replay)
  --disk FILE             the primary's disk image, used in place (repeat for more; default:
                          one new sparse image of --disk-size in a temporary folder)
  --secondary-disk FILE   the first secondary's disk image, one per --disk (default: new sparse
                          images of the primary's sizes)
  --disk-size SIZE        size of the disk images created here (default ${DEFAULT_DISK_SIZE})
  --snapshot FILE         restore this machine snapshot on the primary instead of booting
  --name NAME             control sockets are NAME-primary, NAME-secondary, NAME-secondary-2, ...
                          (default pair)
  --no-reprotect          after a takeover (or a lost secondary) do not start a fresh secondary
  --no-arbiter            without this process as the witness both nodes ask before running the
                          guest: a cut link with both nodes alive then leaves two guests running
                          (split brain), and silence counts as a lost peer only after 3 s, not 0.4 s
  --json                  JSON lines on stdout instead of the console: every event (states,
                          takeovers, syncs, re-protection) and the console output as events
${SYNC_MODE_HELP}
${LOSS_POLICY_HELP}
${FORWARD_HELP}
${GUEST_HELP}
${NODE_HELP}

Keys (after Ctrl-], also from piped stdin):
  k  kill the primary with SIGKILL: the secondary takes over, the console continues there
  p  promote the secondary (a manual failover; the primary is fenced)
  s  print the replication status
  q  quit (stops both nodes)
  ?  list the keys

Piped stdin (not a terminal) is sent to the guest a line at a time; when it ends,
twinvm waits until the console has been quiet for 1.5 s, then stops the nodes.
`;

export const pairCommand: Subcommand = {
  name: "pair",
  summary: "a primary and a secondary on this machine, console attached (the demo)",
  usage: USAGE,
  async run(argv) {
    const values = parseOptions(argv, {
      ...NODE_OPTIONS,
      ...GUEST_OPTIONS,
      mode: { type: "string" },
      "on-secondary-loss": { type: "string" },
      "sync-mode": { type: "string" },
      "sync-interval-ms": { type: "string" },
      "output-coalesce-ms": { type: "string" },
      forward: { type: "string", multiple: true },
      disk: { type: "string", multiple: true },
      "secondary-disk": { type: "string", multiple: true },
      "disk-size": { type: "string" },
      snapshot: { type: "string" },
      name: { type: "string" },
      "no-reprotect": { type: "boolean" },
      "no-arbiter": { type: "boolean" },
      json: { type: "boolean" },
    });
    if (values.help) return printUsage(USAGE);
    const onSecondaryLoss = parseChoice("--on-secondary-loss", values["on-secondary-loss"], LOSS_POLICIES, "continue");
    const mode = parseChoice("--mode", values.mode, PAIR_MODES, "logging-replay");
    const syncMode = parseChoice("--sync-mode", values["sync-mode"], SYNC_MODES, DEFAULT_SYNC_MODE);
    const syncIntervalMs = parseMilliseconds("--sync-interval-ms", values["sync-interval-ms"], MAX_SYNC_INTERVAL_MS);
    const outputCoalesceMs = parseMilliseconds("--output-coalesce-ms", values["output-coalesce-ms"], MAX_OUTPUT_COALESCE_MS);
    const forwards = await parseForwardOptions(values.forward);
    const diskSize = parseSize("--disk-size", values["disk-size"] ?? DEFAULT_DISK_SIZE);
    const snapshotPath = values.snapshot === undefined ? undefined : existingFile("--snapshot", values.snapshot);
    const primaryDisks = (values.disk ?? []).map((path) => existingFile("--disk", path));
    const secondaryDisks = (values["secondary-disk"] ?? []).map((path) => existingFile("--secondary-disk", path));
    if (secondaryDisks.length > 0) checkMatchingDisks(primaryDisks, secondaryDisks);
    const shared = sharedNodeConfig(values);
    const guest = guestOptions(values);
    const json = values.json === true;
    const name = values.name ?? "pair";
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,40}$/.test(name)) throw new UsageError(`--name: expected letters, digits, ".", "_" or "-", got ${JSON.stringify(name)}`);

    const disks: DiskSpec[] =
      primaryDisks.length > 0
        ? primaryDisks.map((image, i) => ({ image, inPlace: true, ...(secondaryDisks[i] !== undefined && { secondaryImage: secondaryDisks[i] }) }))
        : [{ sizeBytes: diskSize }];
    const options: PairOptions = {
      mode,
      syncMode,
      ...(syncIntervalMs !== undefined && { syncIntervalMs }),
      ...(outputCoalesceMs !== undefined && { outputCoalesceMs }),
      onSecondaryLoss,
      forwards,
      disks,
      name,
      runDir: shared.runDir,
      reprotect: values["no-reprotect"] !== true,
      arbiter: values["no-arbiter"] !== true,
      echoLogs: values.verbose === true,
      ...(shared.memoryMiB !== undefined && { memoryMiB: shared.memoryMiB }),
      ...(shared.imagesDir !== undefined && { imagesDir: shared.imagesDir }),
      ...(snapshotPath !== undefined && { snapshotPath }),
      ...(guest.overlay !== undefined && { overlay: guest.overlay }),
      ...(guest.kernelArgs !== undefined && { kernelArgs: guest.kernelArgs }),
    };
    const diskBytes = primaryDisks.length > 0 ? totalSize(primaryDisks) : diskSize;
    const say = (text: string) => !json && process.stderr.write(`twinvm: ${text}\n`);
    const { Pair } = await import("../testing/pair.ts");
    // Until the session below takes over the events: JSON lines, or the start-up progress.
    let starting = true;
    const pair = await startPairForCli(Pair, options, (event, started) => {
      if (!starting) return;
      if (json) return process.stdout.write(JSON.stringify(event) + "\n");
      if (event.type !== "node-started") return;
      const node = started.nodes.find((n) => n.name === event.node)!;
      if (event.role === "secondary") return say(`secondary (pid ${event.pid}) started`);
      say(`primary (pid ${event.pid}), ${mode}, ${disks.length} disk(s) of ${(diskBytes / disks.length / (1 << 20)).toFixed(0)} MiB`);
      // Progress lines only; a failure is reported by Pair.start.
      followPrimaryStartup(node.process, { label: "primary", syncEstimateBytes: ramBytes(options.memoryMiB) + diskBytes, replicated: true }).catch(
        () => undefined,
      );
    });
    starting = false;
    for (const forward of pair.network() === undefined ? [] : forwards)
      say(
        `guest port ${forward.guestPort} is reachable at ${forward.host ?? "127.0.0.1"}:${pair.hostPort(forward.guestPort)} (connections survive a takeover)`,
      );
    say("console attached to the guest on the primary; Ctrl-] k kills the primary, Ctrl-] q quits, Ctrl-] ? lists the keys");
    const say2 = (text: string) => !json && process.stderr.write(`\r\ntwinvm: ${text}\r\n`);
    void pair.primary.process.input(new TextEncoder().encode("\n")); // a fresh prompt
    return runNodeSession({
      source: pairSource(pair, onSecondaryLoss),
      json,
      statusLine: values["no-status-line"] !== true,
      extraCommands: [
        {
          key: "k",
          help: "kill the primary (SIGKILL); the secondary takes over",
          run() {
            const primary = pair.primary;
            if (!primary.running) return say2("the primary is not running");
            say2(`killing the primary ${primary.name} (pid ${primary.pid}) with SIGKILL; the secondary takes over...`);
            void pair.killPrimary();
          },
        },
        {
          key: "p",
          help: "promote the secondary now (manual failover)",
          run() {
            const secondary = pair.secondary;
            if (secondary === undefined) return say2("there is no secondary to promote");
            say2(`promoting ${secondary.name}...`);
            secondary.process.request({ type: "promote" }).catch((error: unknown) => say2(`promote: ${(error as Error).message}`));
          },
        },
      ],
    });
  },
};

/** What the pair says, for a person. */
function noticeOf(event: PairEvent, pair: Pair, onSecondaryLoss: SecondaryLossPolicy): string | undefined {
  switch (event.type) {
    case "state": {
      // A secondary that took over runs a primary engine too: say which engine changed.
      const other = pair.nodes.find((node) => node.name === event.node)?.startedAs !== event.engine;
      // A guest whose disk writes stall during a re-protection is waiting for the copy, not lost.
      const held =
        event.engine === "primary" && event.state === "initial-sync"
          ? onSecondaryLoss === "stall"
            ? "; the guest's disk writes and console output wait until it is done"
            : "; the guest's disk writes wait until it is done (its console and network output flow until the copy's last moment)"
          : "";
      return `${event.node}: ${other ? `${event.engine} ` : ""}${event.state} (${event.reason})${held}`;
    }
    case "takeover":
      return `${event.to} took over from ${event.from}: the guest runs there now (failover ${event.failovers})`;
    case "secondary-lost":
      return `${event.node} is gone`;
    case "reprotecting":
      return `starting ${event.secondary} to protect the guest on ${event.primary} again...`;
    case "protected":
      return `${event.primary} is protected by ${event.secondary}`;
    case "reprotect-failed":
      return `re-protection of ${event.primary} failed: ${event.error}`;
    case "node-exited":
      return `${event.node} exited${event.code === null ? " (killed)" : ` with code ${event.code}`}`;
    default:
      return undefined;
  }
}

function pairSource(pair: Pair, onSecondaryLoss: SecondaryLossPolicy): ConsoleSource {
  return {
    subscribe(handlers) {
      return pair.onEvent((event) => {
        if (event.type === "console") {
          // Only the node running the guest now is shown (after a cut link the old primary may still print).
          if (event.node === pair.primary.name) handlers.output(event.text);
          return;
        }
        handlers.event(event);
        const text = noticeOf(event, pair, onSecondaryLoss);
        if (text !== undefined) handlers.notice(text);
        if (event.type === "node-exited" && pair.nodes.every((node) => !node.running)) handlers.ended();
      });
    },
    input: (bytes) => (pair.primary.runsGuest ? pair.primary.process.input(bytes) : undefined),
    async statusText(sampler: StatusSampler) {
      const primary = pair.primary;
      if (!primary.running) return undefined;
      const line = sampler.line(primary.name, await primary.process.metrics());
      const protection = pair.isProtected ? `protected by ${pair.secondary!.name}` : pair.secondary?.running ? `${pair.secondary.name} syncing` : "UNPROTECTED";
      return `${line} | ${protection}${pair.failovers > 0 ? ` | failovers ${pair.failovers}` : ""}`;
    },
    stop: async () => {
      await pair.stop();
    },
  };
}

/** Pair.start, with a forward's host port in use as a usage error (exit 2) naming it. */
async function startPairForCli(
  pairClass: typeof import("../testing/pair.ts").Pair,
  options: PairOptions,
  onEvent: (event: PairEvent, pair: Pair) => void,
): Promise<Pair> {
  const { PortInUseError } = await import("../network/forwards.ts");
  try {
    return await pairClass.start(options, onEvent);
  } catch (error) {
    const cause = (error as Error).cause;
    if (cause instanceof PortInUseError) throw new UsageError(`--forward: ${cause.message}`);
    throw error;
  }
}
