// Size and cost of the memory-less state (CPU + devices, no RAM), full and as a delta
// between two captures 100 ms apart, on a running booted guest.
import { Machine } from "../emulator/machine.ts";
import { defaultGuest } from "../emulator/node/images.ts";
import { whilePaused } from "../emulator/paused.ts";
import { applyDelta, captureMemorylessState, encodeDelta, encodeMemorylessState } from "../emulator/state/index.ts";
import type { BenchContext, BenchReport } from "./run.ts";
import { median, timed } from "./stats.ts";

const ROUNDS = 12;
const GAP_MS = 100;

export default async function deviceState(context: BenchContext): Promise<BenchReport> {
  const machine = new Machine(defaultGuest());
  const samples = { fullBytes: [] as number[], captureMs: [] as number[], deltaBytes: [] as number[], deltaEncodeMs: [] as number[], deltaApplyMs: [] as number[] };
  try {
    await machine.boot();
    // Something for the guest to do between captures: a shell loop writing to tmpfs.
    await machine.exec("(i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done) >/dev/null 2>&1 &");
    const capture = () => whilePaused(machine, () => timed(() => encodeMemorylessState(captureMemorylessState(machine))));
    let previous = (await capture()).value;
    for (let round = 0; round < ROUNDS; round++) {
      await new Promise((resolve) => setTimeout(resolve, GAP_MS));
      const { ms, value: current } = await capture();
      const delta = timed(() => encodeDelta(previous, current));
      const applied = timed(() => applyDelta(previous, delta.value));
      if (applied.value.length !== current.length) throw new Error("delta round trip lost bytes");
      samples.fullBytes.push(current.length);
      samples.captureMs.push(ms);
      samples.deltaBytes.push(delta.value.length);
      samples.deltaEncodeMs.push(delta.ms);
      samples.deltaApplyMs.push(applied.ms);
      context.log(`round ${round + 1}: full ${current.length} B in ${ms.toFixed(2)} ms, delta ${delta.value.length} B`);
      previous = current;
    }
  } finally {
    await machine.destroy();
  }
  const m = (values: number[]) => median(values);
  return {
    description:
      `Default guest (128 MiB, vgaMemoryKiB 256, no floppy, v86's default ne2k NIC, IDE CD-ROM slot and SB16), booted, ` +
      `running a shell loop that writes to tmpfs every 100 ms. Each round pauses the guest at an instruction boundary, ` +
      `captures CPU and device state without RAM and encodes it (\`captureMemorylessState\` + \`encodeMemorylessState\`), ` +
      `then encodes a delta against the previous capture taken ${GAP_MS} ms earlier (64-byte blocks) and applies it back. ` +
      `Median of ${ROUNDS} rounds. Of the full state, ~1 MiB is VGA (planes 256 KiB, SVGA memory 256 KiB, pixel buffer 512 KiB), ` +
      `64 KiB SB16, 128 KiB the IDE secondary channel buffers, 32 KiB the NIC; all of it mostly unchanged between captures.`,
    table: [
      "| what | median bytes | median ms |",
      "|---|---|---|",
      `| full memory-less state (capture + encode) | ${m(samples.fullBytes)} | ${m(samples.captureMs).toFixed(2)} |`,
      `| delta vs capture ${GAP_MS} ms earlier (encode) | ${m(samples.deltaBytes)} | ${m(samples.deltaEncodeMs).toFixed(2)} |`,
      `| delta apply (hash check of base and result) | | ${m(samples.deltaApplyMs).toFixed(2)} |`,
      `| delta / full | ${(m(samples.deltaBytes) / m(samples.fullBytes)).toFixed(4)} | |`,
    ].join("\n"),
    data: samples,
  };
}
