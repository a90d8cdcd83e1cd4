// `twinvm primary`: boots the guest (or restores a snapshot), connects to a
// running secondary, protects the guest, and attaches its console.
import { loadSecret, SECRET_ENV } from "../../replication/node/secret.ts";
import { existingFile, parseChoice, parseMilliseconds, parseOptions, parseWsUrl, requireOption, UsageError, type Subcommand } from "./args.ts";
import { totalSize } from "./disks.ts";
import {
  FORWARD_HELP,
  GATEWAY_HELP,
  WITNESS_HELP,
  LOSS_POLICIES,
  LOSS_POLICY_HELP,
  NODE_HELP,
  NODE_OPTIONS,
  parseForwardOptions,
  ramBytes,
  sharedNodeConfig,
  startLocalGateway,
  startNode,
  SYNC_MODE_HELP,
  SYNC_MODES,
  MAX_OUTPUT_COALESCE_MS,
  MAX_SYNC_INTERVAL_MS,
} from "./node-options.ts";
import { DEFAULT_SYNC_MODE } from "../../replication/engine/primary/states.ts";
import { runNodeSession, singleNodeSource } from "./node-session.ts";
import { GUEST_HELP, GUEST_OPTIONS, guestArchive } from "./guest-options.ts";
import { followPrimaryStartup } from "./startup-progress.ts";

export const PRIMARY_MODES = ["logging-replay", "dirty-block-copy", "none"] as const;

const USAGE = `Usage: twinvm primary --connect ws://HOST:PORT --secret-file FILE [--disk FILE]... [options]

Boots the guest, connects to a secondary started with \`twinvm secondary\`, copies the
guest to it (initial sync), then runs it protected with the console on this terminal.

Options:
  --connect URL       the secondary's ws://host:port (required unless --mode none)
  --disk FILE         a disk image (repeat for more: vda, vdb, ...); the secondary needs same-size ones
  --mode MODE         how disk writes reach the secondary: ${PRIMARY_MODES.join(", ")} (default logging-replay;
                      none: no replication at all)
  --secret-file FILE  the shared secret (at least 16 bytes; or set ${SECRET_ENV})
  --snapshot FILE     restore this machine snapshot instead of booting
  --name NAME         control socket name (default primary)
  --json              JSON lines on stdout (state changes, syncs, console output) instead of the console
${SYNC_MODE_HELP}
${LOSS_POLICY_HELP}
${FORWARD_HELP}
                      (this process then is the gateway; give the secondary --gateway with the URL printed)
${GATEWAY_HELP}
${WITNESS_HELP}
${GUEST_HELP}
${NODE_HELP}

Keys: Ctrl-] s status, Ctrl-] q quit, Ctrl-] ? help.
`;

export const primaryCommand: Subcommand = {
  name: "primary",
  summary: "boot the guest and protect it with a secondary",
  usage: USAGE,
  async run(argv) {
    const values = parseOptions(argv, {
      ...NODE_OPTIONS,
      connect: { type: "string" },
      disk: { type: "string", multiple: true },
      mode: { type: "string" },
      "on-secondary-loss": { type: "string" },
      "sync-mode": { type: "string" },
      "sync-interval-ms": { type: "string" },
      "output-coalesce-ms": { type: "string" },
      forward: { type: "string", multiple: true },
      gateway: { type: "string" },
      witness: { type: "string" },
      "secret-file": { type: "string" },
      snapshot: { type: "string" },
      name: { type: "string" },
      json: { type: "boolean" },
      ...GUEST_OPTIONS,
    });
    if (values.help) return printUsage(USAGE);
    const syncMode = parseChoice("--sync-mode", values["sync-mode"], SYNC_MODES, DEFAULT_SYNC_MODE);
    const syncIntervalMs = parseMilliseconds("--sync-interval-ms", values["sync-interval-ms"], MAX_SYNC_INTERVAL_MS);
    const outputCoalesceMs = parseMilliseconds("--output-coalesce-ms", values["output-coalesce-ms"], MAX_OUTPUT_COALESCE_MS);
    const forwards = await parseForwardOptions(values.forward);
    if (forwards.length > 0 && values.gateway !== undefined)
      throw new UsageError("give --forward (a gateway in this process) or --gateway (one elsewhere), not both");
    const onSecondaryLoss = parseChoice("--on-secondary-loss", values["on-secondary-loss"], LOSS_POLICIES, "continue");
    const mode = parseChoice("--mode", values.mode, PRIMARY_MODES, "logging-replay");
    const replicated = mode !== "none";
    const connect = replicated ? parseWsUrl("--connect", requireOption("--connect", values.connect, `is required (or --mode none)`)) : undefined;
    const disks = (values.disk ?? []).map((path) => existingFile("--disk", path));
    const secretFile = values["secret-file"] === undefined ? undefined : existingFile("--secret-file", values["secret-file"]);
    const networked = forwards.length > 0 || values.gateway !== undefined;
    if ((replicated || networked) && secretFile === undefined && !process.env[SECRET_ENV])
      requireOption("--secret-file", undefined, `is required (or set ${SECRET_ENV})`);
    const gatewayUrl = values.gateway === undefined ? undefined : parseWsUrl("--gateway", values.gateway);
    const snapshotPath = values.snapshot === undefined ? undefined : existingFile("--snapshot", values.snapshot);
    const shared = sharedNodeConfig(values);
    const guest = await guestArchive(values, shared.memoryMiB);
    const say = (line: string) => !values.json && process.stderr.write(`twinvm: ${line}\n`);
    const gateway = forwards.length > 0 ? await startLocalGateway(forwards, await loadSecret({ file: secretFile }), say) : undefined;
    try {
      const { dispose: _, ...guestConfig } = guest;
      const gatewayConfig = gateway?.url ?? gatewayUrl;
      const primary = startNode(
        {
          role: "primary",
          mode,
          syncMode,
          ...(syncIntervalMs !== undefined && { syncIntervalMs }),
          ...(outputCoalesceMs !== undefined && { outputCoalesceMs }),
          disks,
          connect,
          secretFile,
          snapshotPath,
          name: values.name ?? "primary",
          onSecondaryLoss,
          ...(gatewayConfig !== undefined && { gateway: gatewayConfig }),
          ...(values.witness !== undefined && { witness: parseWsUrl("--witness", values.witness) }),
          ...shared,
          ...guestConfig,
        },
        values.verbose,
      );
      await followPrimaryStartup(primary, { label: "primary", syncEstimateBytes: ramBytes(shared.memoryMiB) + totalSize(disks), replicated });
      if (!values.json) process.stderr.write("twinvm: console attached; Ctrl-] ? lists the keys\n");
      await primary.input(new TextEncoder().encode("\n")); // a fresh prompt
      return await runNodeSession({
        source: singleNodeSource("primary", primary, () => primary.running && !primary.states.includes("fenced")),
        extraCommands: [],
        statusLine: replicated && !values["no-status-line"],
        json: values.json === true,
      });
    } finally {
      guest.dispose();
      await gateway?.close();
    }
  },
};

export function printUsage(usage: string): number {
  process.stdout.write(usage);
  return 0;
}
