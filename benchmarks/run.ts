// `npm run bench [-- name ...]`: runs each benchmarks/*.bench.ts (or the named ones) and
// records its figures, with the machine and the command, in benchmarks/results/.
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { cpus, totalmem, release } from "node:os";
import { fileURLToPath, pathToFileURL } from "node:url";
import { basename, join } from "node:path";

/** What a benchmark module exports as default. */
export type Benchmark = (context: BenchContext) => Promise<BenchReport>;

export interface BenchContext {
  /** Progress lines for the person watching. */
  log: (line: string) => void;
}

export interface BenchReport {
  /** One paragraph: what was measured and how. */
  description: string;
  /** Markdown table(s) of the figures, ratios included. */
  table: string;
  /** The same figures, machine-readable. */
  data: unknown;
}

const here = fileURLToPath(new URL(".", import.meta.url));

function machineFacts(): Record<string, string> {
  const cpu = cpus();
  return {
    cpu: `${cpu.length} x ${cpu[0]?.model ?? "unknown"}`,
    memory: `${(totalmem() / 2 ** 30).toFixed(1)} GiB`,
    os: `Linux ${release()}`,
    node: process.version,
  };
}

async function main(): Promise<void> {
  const wanted = process.argv.slice(2);
  const available = readdirSync(here)
    .filter((f) => f.endsWith(".bench.ts"))
    .map((f) => basename(f, ".bench.ts"))
    .sort();
  const unknown = wanted.filter((name) => !available.includes(name));
  if (unknown.length > 0) {
    process.stderr.write(`bench: unknown benchmark(s) ${unknown.join(", ")}; available: ${available.join(", ")}\n`);
    process.exit(2);
  }
  const names = wanted.length > 0 ? wanted : available;
  const resultsDir = join(here, "results");
  mkdirSync(resultsDir, { recursive: true });
  for (const name of names) {
    // The settings a run was given are part of its command: a reader reruns it as it ran.
    const settings = Object.entries(process.env)
      .filter(([key]) => key.startsWith("TWINVM_BENCH_"))
      .map(([key, value]) => `${key}=${value ?? ""} `)
      .join("");
    const command = `${settings}npm run bench -- ${name}`;
    process.stderr.write(`bench: ${name}\n`);
    const module = (await import(pathToFileURL(join(here, `${name}.bench.ts`)).href)) as { default: Benchmark };
    const started = new Date();
    const report = await module.default({ log: (line) => process.stderr.write(`  ${name}: ${line}\n`) });
    const facts = machineFacts();
    const markdown =
      `# ${name}\n\n${report.description}\n\n${report.table}\n\n` +
      `- command: \`${command}\`\n- date: ${started.toISOString()}\n` +
      Object.entries(facts)
        .map(([k, v]) => `- ${k}: ${v}`)
        .join("\n") +
      "\n";
    writeFileSync(join(resultsDir, `${name}.md`), markdown);
    writeFileSync(
      join(resultsDir, `${name}.json`),
      JSON.stringify({ name, command, date: started.toISOString(), machine: facts, data: report.data }, null, 2) + "\n",
    );
    process.stdout.write(markdown + "\n");
  }
}

await main();
