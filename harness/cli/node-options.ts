// Options every node-running subcommand shares, their help text and their
// translation into a replica-node config.
import { DEFAULTS } from "../../emulator/config.ts";
import { defaultRunDir } from "../run-dir.ts";
import { NodeProcess } from "../node-process.ts";
import type { NodeConfig } from "../replica-node.ts";
import { existingFile, parseMemory } from "./args.ts";

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
