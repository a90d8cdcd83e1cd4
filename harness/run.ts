// `npm start`: boots the default guest and attaches its serial console to this terminal.
import { parseArgs } from "node:util";
import { Machine } from "../emulator/machine.ts";
import { DEFAULTS, MEMORY_MIB_RANGE } from "../emulator/config.ts";
import { TwinvmError } from "../emulator/errors.ts";
import { DEFAULT_IMAGES_DIR, defaultGuest } from "../emulator/node/images.ts";

const DETACH_KEY = 0x1d; // Ctrl-]

const USAGE = `Usage: npm start -- [options]

Boots the default guest and attaches its serial console to this terminal.
Press Ctrl-] to detach and stop the machine.

Options:
  --memory MIB    guest RAM in MiB (${MEMORY_MIB_RANGE.min}-${MEMORY_MIB_RANGE.max}, default ${DEFAULTS.memoryMiB})
  --images DIR    folder with bios.bin, vmlinuz, initramfs.cpio.gz (default ${DEFAULT_IMAGES_DIR})
  -h, --help      show this help
`;

async function main(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        memory: { type: "string" },
        images: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
    }));
  } catch (error) {
    process.stderr.write(`twinvm: ${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const memoryMiB = values.memory === undefined ? undefined : Number(values.memory);

  const machine = new Machine({ ...defaultGuest(values.images), memoryMiB });
  process.stderr.write(`twinvm: booting the default guest (${machine.config.memoryMiB} MiB RAM)...\n`);
  const progress = setInterval(() => process.stderr.write("."), 1000);
  let bootMs: number;
  try {
    ({ bootMs } = await machine.boot());
  } finally {
    clearInterval(progress);
  }
  process.stderr.write(`\ntwinvm: guest ready, boot took ${(bootMs / 1000).toFixed(1)} s. Ctrl-] detaches.\n`);

  machine.console.onOutput((bytes) => process.stdout.write(bytes));
  machine.send("\n"); // a fresh prompt for the user
  return attachTerminal(machine);
}

/** Forwards the terminal to the guest until Ctrl-] or the end of input. */
function attachTerminal(machine: Machine): Promise<number> {
  return new Promise((resolve) => {
    const stdin = process.stdin;
    const finish = async (message: string) => {
      stdin.off("data", onData);
      if (stdin.isTTY) stdin.setRawMode(false);
      stdin.pause();
      await machine.destroy();
      process.stderr.write(`\ntwinvm: ${message}\n`);
      resolve(0);
    };
    const onData = (chunk: Buffer) => {
      const detach = chunk.indexOf(DETACH_KEY);
      if (detach >= 0) {
        if (detach > 0) machine.send(new Uint8Array(chunk.subarray(0, detach)));
        void finish("detached, machine stopped");
        return;
      }
      machine.send(new Uint8Array(chunk));
    };
    if (stdin.isTTY) stdin.setRawMode(true);
    stdin.on("data", onData);
    // Piped input: let the guest answer the last command before stopping.
    stdin.on("end", () => setTimeout(() => void finish("input ended, machine stopped"), 2000));
  });
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`\ntwinvm: ${error instanceof TwinvmError ? error.message : (error as Error).stack}\n`);
    process.exit(1);
  },
);
