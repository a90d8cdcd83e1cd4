// Reproduces the lost interrupt of two virtio disks on one IRQ in a real guest, without a pair:
//   npx tsx harness/stress/intx-race.ts [--minutes M] [--chunk INSTRUCTIONS]
// vda and vdb share IRQ 10; only vda works (bursts of 16 queued 4 KiB direct writes, fio
// iodepth 4), each write completing 0-3 ms after its disk I/O, as a sync's acknowledgement
// releases it, and the guest runs in short slices (as while syncs are in flight, shorter still
// with --chunk) so that completions land inside the guest's interrupt handlers. Linux runs
// vda's handler, then vdb's, for every IRQ 10; if vda completes its last write between the
// two, vdb's ISR read must not lower the IRQ vda raised. A burst that does not finish within
// 60 s is a hang: the guest's state is printed (`Machine.inspect()`) and the exit code is 1.
// Before the wired-OR fix this hung after 49 bursts (5.6 min) at --chunk 300.
import { parseArgs } from "node:util";
import { BlockHook } from "../../emulator/block/hook.ts";
import { MemoryBackend } from "../../emulator/block/memory-backend.ts";
import { Machine } from "../../emulator/machine.ts";
import { defaultGuest } from "../../emulator/node/images.ts";
import { virtioBlkDisk } from "../../emulator/virtio-blk/disk.ts";

const BURST = "fio --name=burst --filename=/dev/vda --rw=randwrite --bs=4k --ioengine=libaio --iodepth=4 --direct=1 --size=64k >/dev/null 2>&1";
const BURST_TIMEOUT_MS = 60_000;

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { minutes: { type: "string", default: "20" }, chunk: { type: "string", default: "300" } }, strict: true });
  const minutes = Number(values.minutes);
  const chunk = Number(values.chunk);
  if (!(minutes > 0) || !Number.isInteger(chunk) || chunk < 1) {
    process.stderr.write("usage: intx-race [--minutes M] [--chunk INSTRUCTIONS]\n");
    return 2;
  }
  const hook = new BlockHook();
  hook.subscribe((event) => (event.type === "write" ? new Promise<void>((resolve) => setTimeout(resolve, Math.random() * 3)) : undefined));
  const machine = new Machine({
    ...defaultGuest(),
    devices: ["vda", "vdb"].map((id) => virtioBlkDisk({ backend: new MemoryBackend(16 << 20), id, hook })),
  });
  const { bootMs } = await machine.boot();
  const shared = (await machine.exec("grep virtio /proc/interrupts")).output.trim();
  process.stdout.write(`booted in ${(bootMs / 1000).toFixed(1)} s; ${shared}; slices of ${chunk} instructions\n`);
  machine.emulator.eagerChunkInstructions = chunk;
  machine.eagerYield = true;
  const started = performance.now();
  let bursts = 0;
  try {
    while (performance.now() - started < minutes * 60_000) {
      try {
        await machine.exec(BURST, { timeoutMs: BURST_TIMEOUT_MS });
      } catch (error) {
        const inspection = await machine.inspect(5);
        process.stdout.write(
          `HANG after ${bursts} bursts, ${((performance.now() - started) / 1000).toFixed(0)} s: ${(error as Error).message.split("\n")[0]}\n`,
        );
        process.stdout.write(`${JSON.stringify({ cpu: inspection.cpu, devices: inspection.devices }, null, 2)}\n`);
        return 1;
      }
      bursts++;
      if (bursts % 25 === 0) process.stdout.write(`${bursts} bursts in ${((performance.now() - started) / 1000).toFixed(0)} s\n`);
    }
    process.stdout.write(`no hang: ${bursts} bursts in ${minutes} min\n`);
    return 0;
  } finally {
    await machine.destroy();
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`intx-race: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
