// `npx tsx harness/demo/measure.ts [snapshot|fresh]...`: opens the demo in headless Chromium
// and prints boot-to-protected time (page opened -> primary protected), the memory of
// Chromium's processes with the pair protected (PSS, from /proc), and the bundle sizes.
import { readFile, readdir } from "node:fs/promises";
import { buildDemo } from "./build.ts";
import { launchChromium } from "./chromium.ts";
import { serveDemo } from "./server.ts";

type Inspect = { twinvmDemo: { nodes(): { status?: { state: string } }[]; timings(): Record<string, number> } };

/** Proportional set size of every process whose command line names chromium, in MB. */
async function chromiumPssMb(): Promise<number> {
  let kb = 0;
  for (const pid of (await readdir("/proc")).filter((name) => /^\d+$/.test(name))) {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
    if (!cmdline.includes("chromium")) continue;
    const rollup = await readFile(`/proc/${pid}/smaps_rollup`, "utf8").catch(() => "");
    kb += Number(/^Pss:\s+(\d+) kB/m.exec(rollup)?.[1] ?? 0);
  }
  return kb / 1024;
}

async function measure(url: string, boot: string): Promise<void> {
  const browser = await launchChromium();
  try {
    const page = await browser.newPage();
    await page.goto(`${url}?boot=${boot}`);
    await page.waitForFunction(
      () =>
        (window as unknown as Inspect).twinvmDemo
          .nodes()
          .map((n) => n.status?.state)
          .join() === "protected,replicating",
      undefined,
      { timeout: 300_000, polling: 250 },
    );
    const timings = await page.evaluate(() => (window as unknown as Inspect).twinvmDemo.timings());
    await page.waitForTimeout(3000); // let start-up garbage go
    const pss = await chromiumPssMb();
    console.log(
      `boot=${boot}: guest ready in the primary's worker after ${(timings["guest-ready"]! / 1000).toFixed(1)} s; protected ${(timings["bootToProtected"]! / 1000).toFixed(1)} s after the page opened; Chromium PSS with the pair protected ${pss.toFixed(0)} MB`,
    );
  } finally {
    await browser.close();
  }
}

const built = await buildDemo({ log: (line) => console.log(line) });
for (const file of built.code) console.log(`${file.path}: ${(file.bytes / 1024).toFixed(0)} KiB, ${(file.gzipBytes / 1024).toFixed(0)} KiB gzipped`);
const server = await serveDemo(built.outDir);
try {
  for (const boot of process.argv.length > 2 ? process.argv.slice(2) : ["snapshot", "fresh"]) await measure(server.url, boot);
} finally {
  await server.close();
}
