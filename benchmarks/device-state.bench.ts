// Cost and size of the per-sync device state: capture of the state's parts (CPU and devices,
// no RAM), which of them changed since the capture before, and the run deltas of those parts
// (what a sync carries), on a running booted guest, captures 100 ms apart.
import { Machine } from "../emulator/machine.ts";
import { defaultGuest } from "../emulator/node/images.ts";
import { StatePartTracker } from "../emulator/state/index.ts";
import { encodeRunDelta } from "../replication/protocol/run-delta.ts";
import type { BenchContext, BenchReport } from "./run.ts";
import { median, timed } from "./stats.ts";

const ROUNDS = 20;
const GAP_MS = 100;

export default async function deviceState(context: BenchContext): Promise<BenchReport> {
  const machine = new Machine(defaultGuest());
  const samples = {
    fullBytes: [] as number[],
    captureMs: [] as number[],
    changedParts: [] as number[],
    changedBytes: [] as number[],
    deltaBytes: [] as number[],
    deltaEncodeMs: [] as number[],
  };
  try {
    await machine.boot();
    // Something for the guest to do between captures: a shell loop writing to tmpfs.
    await machine.exec("(i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done) >/dev/null 2>&1 &");
    const tracker = new StatePartTracker(machine);
    const first = await machine.atNextBoundary(() => tracker.capture());
    const fullBytes = first.changed.reduce((n, part) => n + part.current.length, 0);
    for (let round = 0; round < ROUNDS; round++) {
      await new Promise((resolve) => setTimeout(resolve, GAP_MS));
      const { ms, value: changes } = await machine.atNextBoundary(() => timed(() => tracker.capture()));
      const deltas = timed(() =>
        changes.changed.map((part) => (part.previous === undefined ? part.current : (encodeRunDelta(part.previous, part.current) ?? part.current))),
      );
      samples.fullBytes.push(fullBytes);
      samples.captureMs.push(ms);
      samples.changedParts.push(changes.changed.length);
      samples.changedBytes.push(changes.changed.reduce((n, part) => n + part.current.length, 0));
      samples.deltaBytes.push(deltas.value.reduce((n, delta) => n + delta.length, 0));
      samples.deltaEncodeMs.push(deltas.ms);
      context.log(
        `round ${round + 1}: capture ${ms.toFixed(2)} ms, ${changes.changed.length} of ${changes.partCount} parts changed, delta ${samples.deltaBytes.at(-1)} B`,
      );
    }
  } finally {
    await machine.destroy();
  }
  const m = (values: number[]) => median(values);
  return {
    description:
      `Default guest (128 MiB, vgaMemoryKiB 256, the virtio-net NIC, v86's IDE and SB16), booted, running a shell loop that ` +
      `writes to tmpfs every 100 ms. Each round captures the state's parts at an instruction boundary ` +
      `(\`StatePartTracker.capture()\`: v86's state tree as JSON plus views of its ~60 buffers, each compared with its copy ` +
      `from the capture before, changed ones copied), then run-delta-encodes the changed parts against their previous bytes ` +
      `(what a sync sends). Captures ${GAP_MS} ms apart, median of ${ROUNDS} rounds.`,
    table: [
      "| what | median | |",
      "|---|---|---|",
      `| whole state (all parts) | ${m(samples.fullBytes)} B | |`,
      `| capture and change detection | ${m(samples.captureMs).toFixed(3)} ms | |`,
      `| parts changed per capture | ${m(samples.changedParts)} | ${m(samples.changedBytes)} B |`,
      `| run deltas of the changed parts | ${m(samples.deltaBytes)} B | ${m(samples.deltaEncodeMs).toFixed(3)} ms to encode |`,
      `| delta / whole state | ${(m(samples.deltaBytes) / m(samples.fullBytes)).toFixed(5)} | |`,
    ].join("\n"),
    data: samples,
  };
}
