// The talk benchmark's machinery in a reduced matrix, so it cannot rot between full runs:
// one workload, one round, every disk mode, over the namespace's shaped loopback (or the
// fallback proxy where namespaces are not available). Asserts what was measured and how the
// bytes compare, never how fast anything was.
import { expect } from "chai";
import { runTalk } from "../talk.bench.ts";
import { summarizeTalk } from "../talk/summary.ts";

describe("talk benchmark, reduced matrix", function () {
  this.timeout(900_000);

  it("runs every disk mode over a shaped link in separate processes and records traffic by category", async () => {
    const lines: string[] = [];
    const run = await runTalk(
      {
        links: [{ name: "1 Gbit/s", bitsPerSecond: 1e9 }],
        workloads: ["seq-4k"],
        variants: ["none", "logging-replay", "dirty-block-copy"],
        rounds: 1,
        pauseByMemoryMiB: [],
        warmUpSeconds: 0,
      },
      (line) => lines.push(line),
    );
    expect(run.main.failures, lines.join("\n")).to.deep.equal([]);
    expect(run.main.cells.map((c) => c.variant).sort()).to.deep.equal(["dirty-block-copy", "logging-replay", "none"]);
    for (const cell of run.main.cells) expect(cell.kibPerSecond).to.be.greaterThan(0);
    const metricsOf = (variant: "logging-replay" | "dirty-block-copy") => run.main.cells.find((c) => c.variant === variant)!.metrics!;
    const replay = metricsOf("logging-replay");
    const copy = metricsOf("dirty-block-copy");
    expect(replay.syncs).to.be.greaterThan(100);
    // What travels differs by mode: replay sends I/O logs, copy sends the blocks.
    expect(replay.bytes.ioLog).to.be.greaterThan(0);
    expect(replay.bytes.diskBlocks).to.equal(0);
    expect(copy.bytes.diskBlocks).to.be.greaterThan(2 << 20); // the 2 MiB fio wrote, and more
    expect(replay.diskSyncBytes).to.be.lessThan(copy.diskSyncBytes / 10);
    // Page deltas: what travels for pages is a fraction of the changed pages.
    expect(replay.bytes.memoryPages).to.be.lessThan(replay.memoryPagesRawBytes / 4);
    const summary = summarizeTalk(run);
    expect(summary.table)
      .to.match(/Beside the talk/)
      .and.match(/1 Gbit\/s/);
  });
});
