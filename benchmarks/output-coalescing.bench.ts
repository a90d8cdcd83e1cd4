// `npm run bench -- output-coalescing`: what coalescing the guest's output into bursts does for
// what a user sees, A and B interleaved in one run. The same guest (one template, its network
// services running) as a replicated pair in the default modes, once with output coalescing at
// the engine's default and once off (every piece of output asks for a capture at once): console
// command lines, a 1-byte TCP round trip through the guest's echo service, and 4 MiB streams
// into and out of it, with the syncs each took.
import type { BenchContext, BenchReport } from "./run.ts";
import { ECHO_PORT, networkTemplate, SINK_PORT, SOURCE_PORT } from "./network/guest.ts";
import { pingPong, pullFrom, pushInto } from "./network/clients.ts";
import { startTarget, type Target } from "./network/targets.ts";
import { median, medianRange } from "./stats.ts";
import { DEFAULT_OUTPUT_COALESCE_MS } from "../replication/engine/primary/states.ts";

const ROUNDS = Number(process.env.TWINVM_BENCH_ROUNDS ?? 3);
const CONSOLE_LINES = 20;
const PINGS = 300;
const STREAM_BYTES = 4 << 20;
const VARIANTS = [
  { name: `coalesced (${DEFAULT_OUTPUT_COALESCE_MS} ms, or when the guest idles)`, outputCoalesceMs: undefined },
  { name: "off (each piece of output captured at once)", outputCoalesceMs: 0 },
] as const;

interface Cell {
  round: number;
  variant: string;
  consoleMs: number[];
  consoleSyncsPerLine: number;
  rttMs: number[];
  /** The same again after the streams: the guest's code is compiled by then. */
  warmRttMs: number[];
  inMiBps: number;
  outMiBps: number;
  streamSyncs: number;
}

export default async function outputCoalescing(context: BenchContext): Promise<BenchReport> {
  const template = await networkTemplate();
  const cells: Cell[] = [];
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      // Alternate which variant goes first: the machine's noise drifts within a round.
      const order = round % 2 === 1 ? VARIANTS : [...VARIANTS].reverse();
      for (const variant of order) {
        const target = await startTarget(template, {
          variant: "logging-replay",
          ...(variant.outputCoalesceMs !== undefined && { outputCoalesceMs: variant.outputCoalesceMs }),
        });
        try {
          const cell = await measure(target, round, variant.name);
          cells.push(cell);
          context.log(
            `round ${round} ${variant.name}: console ${median(cell.consoleMs).toFixed(0)} ms (${cell.consoleSyncsPerLine.toFixed(1)} syncs a line), ` +
              `round trip ${median(cell.rttMs).toFixed(2)} ms (${median(cell.warmRttMs).toFixed(2)} after the streams), in ${cell.inMiBps.toFixed(2)} MiB/s, out ${cell.outMiBps.toFixed(2)} MiB/s, ${cell.streamSyncs} syncs`,
          );
        } finally {
          await target.stop();
        }
      }
    }
  } finally {
    await template.dispose();
  }
  return {
    description:
      `The default guest (128 MiB, busybox nc services) restored from one template as a replicated pair of the test API (logging-replay, the default ` +
      `speculative sync mode, two node processes over the real WebSocket on loopback through the fault proxy, unshaped), with output coalescing at its ` +
      `default and off, alternately within each of ${ROUNDS} rounds (each round swaps which goes first). Per pair: ${CONSOLE_LINES} console command lines ` +
      `(\`echo\`, typed on the serial console, answered when output commit releases the answer); ${PINGS} round trips of one byte through the echo service ` +
      `(\`nc -ll -p 7 -e cat\`, via the gateway: each byte waits for its echo); ${STREAM_BYTES >> 20} MiB into the guest's sink and ${STREAM_BYTES >> 20} MiB out ` +
      "of its source; the primary's syncs over each; the round trips again (a guest restored from a snapshot runs slower until v86 has compiled its code again). Medians of the rounds' medians, with the rounds' range.",
    table: table(cells),
    data: { rounds: ROUNDS, cells },
  };
}

async function measure(target: Target, round: number, variant: string): Promise<Cell> {
  const syncs = async () => (await target.metrics()).syncs;
  const consoleMs: number[] = [];
  const beforeConsole = await syncs();
  for (let line = 0; line < CONSOLE_LINES; line++) {
    const started = performance.now();
    await target.exec("echo answered", 30_000);
    consoleMs.push(performance.now() - started);
  }
  const consoleSyncsPerLine = ((await syncs()) - beforeConsole) / CONSOLE_LINES;
  const rttMs = await pingPong(target.hostPort(ECHO_PORT), PINGS, 8000);
  const beforeStreams = await syncs();
  const into = await pushInto(target.hostPort(SINK_PORT), STREAM_BYTES, 120_000);
  const out = await pullFrom(target.hostPort(SOURCE_PORT), STREAM_BYTES, 120_000);
  const streamSyncs = (await syncs()) - beforeStreams;
  const warmRttMs = await pingPong(target.hostPort(ECHO_PORT), PINGS, 8000);
  const mib = STREAM_BYTES / (1 << 20);
  return {
    round,
    variant,
    consoleMs,
    consoleSyncsPerLine,
    rttMs,
    warmRttMs,
    inMiBps: mib / (into.ms / 1000),
    outMiBps: mib / (out.ms / 1000),
    streamSyncs,
  };
}

/** The table's columns after the variant: a cell's figure and its digits. */
const COLUMNS: readonly { heading: string; of: (cell: Cell) => number; digits: number }[] = [
  { heading: "console line answered, ms", of: (cell) => median(cell.consoleMs), digits: 0 },
  { heading: "syncs per console line", of: (cell) => cell.consoleSyncsPerLine, digits: 1 },
  { heading: "1-byte round trip, ms", of: (cell) => median(cell.rttMs), digits: 2 },
  { heading: "the same after the streams, ms", of: (cell) => median(cell.warmRttMs), digits: 2 },
  { heading: "into the guest, MiB/s", of: (cell) => cell.inMiBps, digits: 2 },
  { heading: "out of the guest, MiB/s", of: (cell) => cell.outMiBps, digits: 2 },
  { heading: "syncs over both streams", of: (cell) => cell.streamSyncs, digits: 0 },
];

function table(cells: readonly Cell[]): string {
  const rows = VARIANTS.map(({ name }) => {
    const mine = cells.filter((cell) => cell.variant === name);
    return `| ${name} | ${COLUMNS.map((column) => medianRange(mine.map(column.of), column.digits)).join(" | ")} |`;
  });
  return [`| output coalescing | ${COLUMNS.map((column) => column.heading).join(" | ")} |`, `|---|${COLUMNS.map(() => "---").join("|")}|`, ...rows].join("\n");
}
