// Boot time of the default guest: CPU start to the ready marker, and restore of a snapshot to a shell answer.
import { Machine } from "../emulator/machine.ts";
import { defaultGuest } from "../emulator/node/images.ts";
import type { BenchContext, BenchReport } from "./run.ts";
import { median } from "./stats.ts";

const ROUNDS = 5;

export default async function boot(context: BenchContext): Promise<BenchReport> {
  const bootMs: number[] = [];
  const restoreMs: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const machine = new Machine(defaultGuest());
    const result = await machine.boot();
    bootMs.push(result.bootMs);
    const snapshot = await machine.snapshot();
    await machine.destroy();
    const started = performance.now();
    const copy = await Machine.fromSnapshot(snapshot, defaultGuest());
    await copy.exec("true");
    restoreMs.push(performance.now() - started);
    await copy.destroy();
    context.log(`round ${round + 1}: boot ${result.bootMs.toFixed(0)} ms, restore ${restoreMs.at(-1)!.toFixed(0)} ms`);
  }
  const row = (name: string, values: number[]) =>
    `| ${name} | ${(median(values) / 1000).toFixed(2)} | ${(Math.min(...values) / 1000).toFixed(2)} | ${(Math.max(...values) / 1000).toFixed(2)} |`;
  return {
    description:
      `Default guest (128 MiB, trimmed kernel command line), ${ROUNDS} rounds in one process, one machine at a time. ` +
      "Boot: from starting the CPU to the ready marker on ttyS0. Restore: from snapshot bytes to the answer of `true` on the console.",
    table: ["| phase | median s | min s | max s |", "|---|---|---|---|", row("boot", bootMs), row("restore snapshot", restoreMs)].join("\n"),
    data: { bootMs, restoreMs },
  };
}
