// The talk benchmark's machinery in a reduced matrix, so it cannot rot between full runs:
// one workload, one round, every disk mode (logging-replay in both sync modes), over the namespace's shaped loopback (or the
// fallback proxy where namespaces are not available). Asserts what was measured and how the
// bytes compare, never how fast anything was.
import { expect } from "chai";
import { runTalk } from "../talk.bench.ts";
import { summarizeTalk, timelineSamples } from "../talk/summary.ts";
import type { Variant } from "../talk/matrix.ts";

describe("talk benchmark, reduced matrix", function () {
  this.timeout(900_000);

  it("runs every disk mode over a shaped link in separate processes and records traffic by category", async () => {
    const lines: string[] = [];
    const run = await runTalk(
      {
        links: [{ name: "1 Gbit/s", bitsPerSecond: 1e9 }],
        workloads: ["seq-4k"],
        variants: ["none", "logging-replay", "dirty-block-copy", "logging-replay+synchronous"],
        rounds: 1,
        pauseByMemoryMiB: [],
        warmUpSeconds: 0,
      },
      (line) => lines.push(line),
    );
    expect(run.main.failures, lines.join("\n")).to.deep.equal([]);
    expect(run.main.cells.map((c) => c.variant).sort()).to.deep.equal(["dirty-block-copy", "logging-replay", "logging-replay+synchronous", "none"]);
    for (const cell of run.main.cells) expect(cell.kibPerSecond).to.be.greaterThan(0);
    const metricsOf = (variant: Variant) => run.main.cells.find((c) => c.variant === variant)!.metrics!;
    // Kemari's comparison is the synchronous mode's: a sync per write, each logged by address.
    const replay = metricsOf("logging-replay+synchronous");
    const copy = metricsOf("dirty-block-copy");
    expect(replay.syncs).to.be.greaterThan(100);
    // What travels differs by mode: replay sends I/O logs, copy sends the blocks.
    expect(replay.bytes.ioLog).to.be.greaterThan(0);
    expect(replay.bytes.diskBlocks).to.equal(0);
    expect(copy.bytes.diskBlocks).to.be.greaterThan(2 << 20); // the 2 MiB fio wrote, and more
    expect(replay.diskSyncBytes).to.be.lessThan(copy.diskSyncBytes / 10);
    // Page deltas: what travels for pages is a fraction of the changed pages.
    expect(replay.bytes.memoryPages).to.be.lessThan(replay.memoryPagesRawBytes / 4);
    // The speculative mode logs many writes per sync (fio reuses its buffer, so most of them travel with their data).
    const speculative = metricsOf("logging-replay");
    expect(speculative.syncs)
      .to.be.greaterThan(0)
      .and.lessThan(replay.syncs / 2);
    expect(speculative.writesSynced).to.be.greaterThan(speculative.syncs * 2);
    const summary = summarizeTalk(run);
    expect(summary.table)
      .to.match(/Beside the talk/)
      .and.match(/1 Gbit\/s/)
      .and.match(/synchronous sync mode/)
      .and.match(/Per-sync timeline/);
    // The timeline has each replicated variant's stages, the synchronous one's round trip a sync per write.
    const timelines = timelineSamples(run);
    expect(timelines.map((t) => t.target).sort()).to.deep.equal(["dirty-block-copy", "logging-replay", "logging-replay+synchronous"]);
    const synchronous = timelines.find((t) => t.target === "logging-replay+synchronous")!;
    expect(synchronous.roundTrip.count).to.be.within(replay.syncs - 2, replay.syncs + 2);
    expect(synchronous.stages["next-request"]?.count).to.be.greaterThan(0);
  });
});
