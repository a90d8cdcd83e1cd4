// Options every node-running subcommand shares, their help text and their
// translation into a replica-node config.
import { DEFAULTS } from "../../emulator/config.ts";
import { defaultRunDir } from "../run-dir.ts";
import { NodeProcess } from "../node-process.ts";
import type { NodeConfig } from "../replica-node.ts";
import { existingFile, parseMemory, UsageError } from "./args.ts";
import type { ForwardSpec } from "../network/forwards.ts";
import type { Gateway } from "../network/gateway.ts";
import { DEFAULT_OUTPUT_COALESCE_MS, DEFAULT_SYNC_INTERVAL_MS, DEFAULT_SYNC_MODE } from "../../replication/engine/primary/states.ts";

/** What a primary does when it loses its secondary; see PrimaryEngine. */
export const LOSS_POLICIES = ["continue", "stall"] as const;

export const LOSS_POLICY_HELP = `  --on-secondary-loss continue|stall
                      when the secondary is lost (dead or cut off: the primary cannot tell):
                      continue = run on UNPROTECTED (default: the guest stays available),
                      stall = hold guest writes and output until a secondary protects it again`;

export const MACHINE_OPTIONS = {
  memory: { type: "string" },
  images: { type: "string" },
} as const;

export const NODE_OPTIONS = {
  ...MACHINE_OPTIONS,
  "run-dir": { type: "string" },
  "no-status-line": { type: "boolean" },
  verbose: { type: "boolean", short: "v" },
  help: { type: "boolean", short: "h" },
} as const;

export const MACHINE_HELP = `  --memory MIB        guest RAM in MiB (default ${DEFAULTS.memoryMiB}; both nodes of a pair need the same)
  --images DIR        folder with bios.bin, vmlinuz, initramfs.cpio.gz (default: the guest shipped with twinvm)`;

export const NODE_HELP = `${MACHINE_HELP}
  --run-dir DIR       where the control sockets live, for \`twinvm status\` and \`promote\` (default ${defaultRunDir()})
  --no-status-line    do not draw the live status row at the bottom of the terminal
  -v, --verbose       echo the node processes' logs on stderr
  -h, --help          show this help`;

export interface NodeOptionValues {
  memory?: string;
  images?: string;
  "run-dir"?: string;
  verbose?: boolean;
}

/** The parts of a NodeConfig that come from the shared options. */
export function sharedNodeConfig(values: NodeOptionValues): Pick<NodeConfig, "memoryMiB" | "imagesDir" | "runDir" | "metricsIntervalMs"> {
  if (values.images !== undefined)
    for (const file of ["bios.bin", "vmlinuz", "initramfs.cpio.gz"]) existingFile("--images: guest image", `${values.images.replace(/\/$/, "")}/${file}`);
  return {
    memoryMiB: parseMemory(values.memory),
    imagesDir: values.images,
    runDir: values["run-dir"] ?? defaultRunDir(),
    // The CLI shows metrics in its status line; periodic log lines would only garble the console.
    metricsIntervalMs: values.verbose ? 10_000 : 0,
  };
}

export function startNode(config: NodeConfig, verbose: boolean | undefined): NodeProcess {
  return new NodeProcess(config, { echoStderr: verbose === true });
}

export function ramBytes(memoryMiB: number | undefined): number {
  return (memoryMiB ?? DEFAULTS.memoryMiB) * (1 << 20);
}

/** When the guest sees a disk write complete; see SyncMode. */
export const SYNC_MODES = ["speculative", "synchronous"] as const;

export const SYNC_MODE_HELP = `  --sync-mode speculative|synchronous
                      when the guest sees a disk write complete: speculative = at once, logged by
                      the next capture (console and network output still wait for the secondary),
                      synchronous = once the secondary acknowledged it (Kemari) (default ${DEFAULT_SYNC_MODE})
  --sync-interval-ms N
                      speculative: a write nothing outside waits on is logged within N ms
                      (default ${DEFAULT_SYNC_INTERVAL_MS}; output is logged sooner)
  --output-coalesce-ms N
                      console bytes and frames wait up to N ms for the rest of their burst before
                      a capture covers them, or until the guest idles (default ${DEFAULT_OUTPUT_COALESCE_MS}; 0: at once)`;

/** The longest output coalescing a command line may ask for: every byte out may wait this much more. */
export const MAX_OUTPUT_COALESCE_MS = 1000;

/** The longest sync interval a command line may ask for: a takeover rolls the guest back up to this much. */
export const MAX_SYNC_INTERVAL_MS = 10_000;

export const FORWARD_HELP = `  --forward [HOST:]PORT:GUESTPORT
                      forward a host TCP port to the guest (repeatable; HOST defaults to 127.0.0.1,
                      PORT 0 picks a free one): a network gateway (passt, Debian package \`passt\`)
                      in this process owns the connections, so they survive a takeover`;

/** `--forward` values as gateway forwards; a malformed one is a usage error (exit 2). */
export async function parseForwardOptions(values: readonly string[] | undefined): Promise<ForwardSpec[]> {
  const { parseForward, checkForwards, ForwardError } = await import("../network/forwards.ts");
  try {
    const specs = (values ?? []).map((value) => parseForward(value));
    checkForwards(specs);
    return specs;
  } catch (error) {
    if (error instanceof ForwardError) throw new UsageError(`--forward: ${error.message}`);
    throw error;
  }
}

export const WITNESS_HELP = `  --witness URL       the arbiter's ws://HOST:PORT (\`twinvm witness\`, or \`twinvm gateway --witness\`):
                      this node runs the guest only while the witness grants it (no split brain)`;

export const GATEWAY_HELP = `  --gateway URL       the network gateway's ws://HOST:PORT (\`twinvm gateway\`, or a primary started with
                      --forward): the guest's NIC talks to it while the guest runs on this node`;

/**
 * A network gateway in this process (passt), for a command that runs the guest's node as a
 * child: it outlives the node. A forward's port in use is a usage error (exit 2) naming it.
 */
export async function startLocalGateway(forwards: ForwardSpec[], secret: Uint8Array, say: (line: string) => void): Promise<Gateway> {
  const [{ startGateway }, { PortInUseError }] = await Promise.all([import("../network/gateway.ts"), import("../network/forwards.ts")]);
  try {
    const gateway = await startGateway({ forwards, secret });
    say(`network gateway at ${gateway.url} (passt pid ${gateway.passtPid})`);
    for (const forward of gateway.forwards) say(`guest port ${forward.guestPort} is reachable at ${forward.host}:${forward.port}`);
    return gateway;
  } catch (error) {
    if (error instanceof PortInUseError) throw new UsageError(`--forward: ${error.message}`);
    throw error;
  }
}
