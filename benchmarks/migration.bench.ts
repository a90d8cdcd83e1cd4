// Live migration with logging-replay (the talk's future work): the guest keeps running while
// it is copied to the target and kept current by event-driven syncs whose disk writes travel
// as I/O logs; then it stops here, one last sync, and resumes there. Against the baseline that
// stops the guest for the whole copy (stop-and-copy), on an idle guest and on one writing
// files, interleaved in one run. In-process link (no bandwidth limit): the figures compare
// what each method makes the guest wait for, not a network.
import { benchPrimary, benchSecondary, prepareBenchGuest } from "./in-process-pair.ts";
import type { BenchContext, BenchReport } from "./run.ts";
import { median } from "./stats.ts";
import type { MigrationReport } from "../replication/engine/primary/engine.ts";

const DISK_BYTES = 48 << 20;
const ROUNDS = 3;
const SETUP = "mke2fs -q -F /dev/vda && mkdir -p /mnt && mount /dev/vda /mnt && sync";
/** Writes and syncs 64 KiB files without end, in the background. */
const WRITER = "(while true; do dd if=/dev/urandom of=/mnt/w bs=4k count=16 conv=fsync 2>/dev/null; done) > /dev/null 2>&1 &";

type Load = "idle" | "writing";
type Method = "live" | "stop-and-copy";

export default async function migration(context: BenchContext): Promise<BenchReport> {
  const guest = await prepareBenchGuest(DISK_BYTES, SETUP);
  const cells: { load: Load; method: Method; reports: MigrationReport[] }[] = [];
  for (const load of ["idle", "writing"] as const) for (const method of ["live", "stop-and-copy"] as const) cells.push({ load, method, reports: [] });
  for (let round = 0; round < ROUNDS; round++) {
    for (const cell of cells) {
      const report = await migrateOnce(guest, cell.load, cell.method);
      cell.reports.push(report);
      context.log(
        `round ${round + 1} ${cell.load} ${cell.method}: downtime ${report.downtimeMs?.toFixed(1)} ms, total ${report.totalMs.toFixed(0)} ms, ${(report.bytes / 2 ** 20).toFixed(1)} MiB`,
      );
    }
  }
  const of = (reports: MigrationReport[], f: (r: MigrationReport) => number) => median(reports.map(f));
  const rows = cells.map(
    ({ load, method, reports }) =>
      `| ${load} | ${method} | ${of(reports, (r) => r.downtimeMs ?? NaN).toFixed(1)} | ${of(reports, (r) => r.totalMs).toFixed(0)} | ` +
      `${of(reports, (r) => r.copyMs).toFixed(0)} | ${(of(reports, (r) => r.bytes) / 2 ** 20).toFixed(1)} |`,
  );
  const downtime = (load: Load, method: Method) => of(cells.find((c) => c.load === load && c.method === method)!.reports, (r) => r.downtimeMs ?? NaN);
  return {
    description:
      `Default guest (128 MiB), a ${DISK_BYTES >> 20} MiB ext2 disk; the target starts from the guest's disk as it was at boot, so the copy ` +
      `includes the disk whenever the guest wrote to it (its digest differs). "writing": \`${WRITER}\` runs in the guest during the migration. ` +
      `Downtime: from the guest's last instruction on the source to its first on the target. Bytes: everything the source sent. ` +
      `${ROUNDS} rounds, cells interleaved, medians. \`PrimaryEngine.migrate(target, { stopAndCopy })\`.`,
    table: [
      "| guest | method | downtime ms | total ms | copy ms | MiB sent |",
      "|---|---|---|---|---|---|",
      ...rows,
      "",
      `Downtime, live vs stop-and-copy: idle ${(downtime("idle", "live") / downtime("idle", "stop-and-copy")).toFixed(3)}x, ` +
        `writing ${(downtime("writing", "live") / downtime("writing", "stop-and-copy")).toFixed(3)}x.`,
    ].join("\n"),
    data: { cells },
  };
}

async function migrateOnce(guest: { snapshot: Uint8Array; disk: Uint8Array }, load: Load, method: Method): Promise<MigrationReport> {
  const source = await benchPrimary(guest, { mode: "logging-replay" });
  const target = await benchSecondary(source, guest.disk);
  try {
    if (load === "writing") {
      const started = await source.machine.exec(WRITER);
      if (started.exitCode !== 0) throw new Error(`the writer did not start: ${started.output}`);
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    const report = await source.engine.migrate(target.channel, { stopAndCopy: method === "stop-and-copy" });
    const echo = await target.machine.exec("echo migrated");
    if (echo.output !== "migrated\n") throw new Error(`the guest does not answer on the target: ${JSON.stringify(echo.output)}`);
    return report;
  } finally {
    await source.engine.close();
    await target.engine.close();
    await source.machine.destroy();
    await target.machine.destroy();
  }
}
