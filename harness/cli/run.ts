// `twinvm run`: one machine in this process, no replication, console attached.
import { existingFile, parseOptions, type Subcommand } from "./args.ts";
import { FORWARD_HELP, MACHINE_HELP, MACHINE_OPTIONS, parseForwardOptions, sharedNodeConfig } from "./node-options.ts";
import type { ForwardSpec } from "../network/forwards.ts";
import type { Machine } from "../../emulator/machine.ts";
import { printUsage } from "./primary.ts";
import { DEFAULT_CMDLINE } from "../../emulator/config.ts";
import { GUEST_HELP, GUEST_OPTIONS, guestArchive } from "./guest-options.ts";
import { ProgressLine, seconds } from "./progress.ts";
import { attachTerminal } from "./terminal.ts";

const USAGE = `Usage: twinvm run [options]

Boots the guest in this process, without replication, and attaches its serial
console to this terminal. Ctrl-] q stops it.

Options:
  --disk FILE         a disk image (repeat for more: vda, vdb, ...)
${FORWARD_HELP}
${GUEST_HELP}
${MACHINE_HELP}
  -h, --help          show this help
`;

/** Quiet time after piped input ends, so the guest can answer the last command. */
const PIPE_DRAIN_MS = 2000;

export const runCommand: Subcommand = {
  name: "run",
  summary: "one machine, no replication",
  usage: USAGE,
  async run(argv) {
    const values = parseOptions(argv, {
      ...MACHINE_OPTIONS,
      ...GUEST_OPTIONS,
      disk: { type: "string", multiple: true },
      forward: { type: "string", multiple: true },
      help: { type: "boolean", short: "h" },
    });
    if (values.help) return printUsage(USAGE);
    const forwards = await parseForwardOptions(values.forward);
    const { memoryMiB, imagesDir } = sharedNodeConfig(values);
    const guest = await guestArchive(values, memoryMiB);
    try {
      return await runMachine(values.disk ?? [], { memoryMiB, imagesDir, overlayArchive: guest.overlayArchive, kernelArgs: guest.kernelArgs, forwards });
    } finally {
      guest.dispose();
    }
  },
};

async function runMachine(
  disks: string[],
  settings: {
    memoryMiB: number | undefined;
    imagesDir: string | undefined;
    overlayArchive: string | undefined;
    kernelArgs: string | undefined;
    forwards: ForwardSpec[];
  },
): Promise<number> {
  // Loaded here, not at the top: `twinvm --help` must not pay for the emulator.
  const [{ Machine }, { guestImages }, { FileBackend }, { virtioBlkDisk }] = await Promise.all([
    import("../../emulator/machine.ts"),
    import("../overlay/guest-images.ts"),
    import("../../emulator/node/file-backend.ts"),
    import("../../emulator/virtio-blk/disk.ts"),
  ]);
  const backends = await Promise.all(disks.map((path) => FileBackend.open(existingFile("--disk", path))));
  const devices = backends.map((backend, i) => virtioBlkDisk({ backend, id: `vd${String.fromCharCode(0x61 + i)}` }));
  const machine = new Machine({
    ...guestImages(settings.imagesDir, settings.overlayArchive),
    ...(settings.kernelArgs !== undefined && { cmdline: `${DEFAULT_CMDLINE} ${settings.kernelArgs}` }),
    memoryMiB: settings.memoryMiB,
    devices,
  });

  const progress = new ProgressLine();
  const started = performance.now();
  const tick = setInterval(
    () => progress.update(`twinvm: booting the guest (${machine.config.memoryMiB} MiB RAM)... ${seconds(performance.now() - started)}`),
    500,
  );
  let bootMs: number;
  try {
    ({ bootMs } = await machine.boot());
  } finally {
    clearInterval(tick);
    progress.done();
  }
  process.stderr.write(`twinvm: guest ready, boot took ${seconds(bootMs)}. Ctrl-] q stops it, Ctrl-] ? lists the keys.\n`);
  machine.console.onOutput((bytes) => process.stdout.write(bytes));
  const network = settings.forwards.length > 0 ? await connectNetwork(machine, settings.forwards) : undefined;
  machine.send("\n"); // a fresh prompt for the user

  return new Promise<number>((resolve) => {
    const stop = async (why: string) => {
      terminal.detach();
      await network?.close();
      await machine.destroy();
      process.stderr.write(`\ntwinvm: ${why}, machine stopped\n`);
      resolve(0);
    };
    const terminal = attachTerminal({
      send: (bytes) => machine.send(bytes),
      commands: [{ key: "q", help: "quit (stops the machine)", run: () => void stop("quit") }],
      onEnd: () => setTimeout(() => void stop("input ended"), PIPE_DRAIN_MS),
    });
  });
}

/**
 * The guest's NIC on a gateway in this process (no replication: frames go straight out). The
 * link stays on loopback inside this process, so its secret is a random one made here.
 */
async function connectNetwork(machine: Machine, forwards: ForwardSpec[]): Promise<{ close(): Promise<void> }> {
  const [{ startLocalGateway }, { GuestNetworkLink }] = await Promise.all([import("./node-options.ts"), import("../network/guest-link.ts")]);
  const secret = crypto.getRandomValues(new Uint8Array(32));
  const gateway = await startLocalGateway(forwards, secret, (line) => process.stderr.write(`twinvm: ${line}\n`));
  const link = new GuestNetworkLink(machine, { url: gateway.url, secret, nodeId: "run" });
  link.attach(1);
  return {
    async close() {
      link.close();
      await gateway.close();
    },
  };
}
