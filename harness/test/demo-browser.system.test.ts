// The browser demo end to end, in headless Chromium (Debian's chromium, driven by
// playwright-core): the page loads, the primary restores the guest in its worker and
// protects it with the secondary in another; a command typed into the primary's
// terminal answers; a 5 s stall of both workers (a frozen tab) causes no failover;
// switching the disk mode changes the disk-block bytes; pulling the plug on the primary
// makes the secondary answer with the file written before; an insecure origin gets a
// clear message. Screenshots go to tmp/demo-e2e/.
import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { expect } from "chai";
import type { Browser, Page } from "playwright-core";
import { buildDemo } from "../demo/build.ts";
import { launchChromium } from "../demo/chromium.ts";
import { serveDemo, type DemoServer } from "../demo/server.ts";

const SCREENSHOTS = fileURLToPath(new URL("../../tmp/demo-e2e/", import.meta.url));

interface NodeView {
  name: string;
  alive: boolean;
  status?: { role: string; state: string; runsGuest: boolean; epoch: number };
  metrics?: { syncs: number; writesSynced: number; bytes: Record<string, number>; failoverMs?: number };
  generation?: number;
  link?: { ownStalls: number; longestOwnStallMs: number };
}

describe("browser demo (headless Chromium)", function () {
  this.timeout(180_000);
  let server: DemoServer;
  let browser: Browser;
  let page: Page;
  const pageErrors: string[] = [];

  before(async function () {
    this.timeout(400_000);
    mkdirSync(SCREENSHOTS, { recursive: true });
    const built = await buildDemo();
    server = await serveDemo(built.outDir);
    browser = await launchChromium();
    page = await browser.newPage({ viewport: { width: 1720, height: 1000 } });
    page.on("pageerror", (error) => pageErrors.push(error.message));
    await page.goto(server.url);
  });

  after(async () => {
    await browser?.close();
    await server?.close();
  });

  afterEach(() => {
    expect(pageErrors, "uncaught errors in the page").to.deep.equal([]);
  });

  const nodes = (): Promise<NodeView[]> => page.evaluate(() => (window as unknown as { twinvmDemo: { nodes(): NodeView[] } }).twinvmDemo.nodes());
  const transcript = (name: string): Promise<string> =>
    page.evaluate((n) => (window as unknown as { twinvmDemo: { transcript(n: string): string } }).twinvmDemo.transcript(n), name);
  const node = async (name: string): Promise<NodeView> => (await nodes()).find((n) => n.name === name)!;

  async function until<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 90_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = await probe();
      if (value !== undefined && value !== false) return value;
      if (Date.now() > deadline) {
        const messages = await page.locator("#messages").innerText();
        throw new Error(`timed out waiting for ${what}; nodes: ${JSON.stringify(await nodes())}; messages: ${messages}`);
      }
      await page.waitForTimeout(250);
    }
  }

  const stateIs = (name: string, state: string) => until(`node ${name} ${state}`, async () => (await node(name))?.status?.state === state);

  /** Types into a pane's terminal and waits for `answer` in what that node printed afterwards. */
  async function typeAndWait(pane: 0 | 1, name: string, line: string, answer: string, timeoutMs = 60_000): Promise<string> {
    const before = (await transcript(name)).length;
    await page.click(`#term-${pane} .xterm`);
    await page.keyboard.type(line + "\n");
    return until(
      `"${answer}" from node ${name}`,
      async () => {
        const text = (await transcript(name)).slice(before);
        return text.includes(answer) ? text : undefined;
      },
      timeoutMs,
    );
  }

  it("loads, restores the guest in the primary's worker and protects it with the secondary", async () => {
    await stateIs("A", "protected");
    await stateIs("B", "replicating");
    const timings = await page.evaluate(() => (window as unknown as { twinvmDemo: { timings(): Record<string, number> } }).twinvmDemo.timings());
    expect(timings["bootToProtected"]).to.be.a("number");
    console.log(`      boot-to-protected in the page (snapshot): ${(timings["bootToProtected"]! / 1000).toFixed(1)} s`);
  });

  it("answers a command typed into the primary's terminal (released by output commit)", async () => {
    const syncsBefore = (await node("A")).metrics!.syncs;
    await typeAndWait(0, "A", "echo typed-$((6*7))", "typed-42");
    // The echo and the answer were printed by the guest, so they came through syncs.
    expect((await node("A")).metrics!.syncs).to.be.greaterThan(syncsBefore);
  });

  it("does not fail over when both workers stall for 5 s, as in a frozen tab (the link discounts its own stall)", async () => {
    // CDP's Page.setWebLifecycleState "frozen" does not reach dedicated workers in headless
    // Chromium 156 (measured: no stall seen), so the workers are stalled from inside.
    const stallsBefore = (await nodes()).map((n) => n.link?.ownStalls ?? 0);
    await page.evaluate(() => (window as unknown as { twinvmDemo: { stallWorkers(ms: number): void } }).twinvmDemo.stallWorkers(5000));
    await page.waitForTimeout(8000);
    const after = await nodes();
    expect(after.find((n) => n.name === "A")!.status!.state).to.equal("protected");
    expect(after.find((n) => n.name === "B")!.status!.state).to.equal("replicating");
    const stallsAfter = after.map((n) => n.link?.ownStalls ?? 0);
    console.log(`      own stalls discounted: before ${stallsBefore.join("/")}, after ${stallsAfter.join("/")}`);
    expect(
      stallsAfter.every((count, i) => count > stallsBefore[i]!),
      "both links saw their own stall",
    ).to.equal(true);
    await typeAndWait(0, "A", "echo after-stall-$((2*3))", "after-stall-6");
  });

  async function writeFilesWorkload(): Promise<{ diskBlocks: number; ioLog: number; writes: number }> {
    const before = (await node("A")).metrics!;
    const marker = (await transcript("A")).split("wrote 8 files").length;
    await page.click("#write-files");
    await until("the write-files workload", async () => (await transcript("A")).split("wrote 8 files").length > marker, 120_000);
    // Metrics arrive from the worker on a timer, so the last syncs may not be counted yet:
    // wait until two readings a couple of intervals apart agree.
    let after = (await node("A")).metrics!;
    for (let settled = false, tries = 0; !settled && tries < 10; tries++) {
      await page.waitForTimeout(1500);
      const next = (await node("A")).metrics!;
      settled = next.syncs === after.syncs;
      after = next;
    }
    return {
      diskBlocks: after.bytes["diskBlocks"]! - before.bytes["diskBlocks"]!,
      ioLog: after.bytes["ioLog"]! - before.bytes["ioLog"]!,
      writes: after.writesSynced - before.writesSynced,
    };
  }

  it("switching the disk mode to dirty-block-copy makes disk blocks travel instead of the I/O log", async () => {
    const replay = await writeFilesWorkload();
    // The live I/O log showed the writes as replayed from the replica's memory...
    expect(await page.locator("#io-log li.io-replayed").count()).to.be.greaterThan(0);
    await page.check("input[name=mode][value=dirty-block-copy]");
    await stateIs("C", "replicating");
    await stateIs("A", "protected");
    expect((await node("B")).alive, "the old secondary is retired").to.equal(false);
    const blockCopy = await writeFilesWorkload();
    // ...and now as copied blocks.
    expect(await page.locator("#io-log li.io-block-copy").count()).to.be.greaterThan(0);
    console.log(
      `      write-files: logging-replay ${replay.diskBlocks} B blocks + ${replay.ioLog} B log (${replay.writes} writes); dirty-block-copy ${blockCopy.diskBlocks} B blocks + ${blockCopy.ioLog} B log (${blockCopy.writes} writes)`,
    );
    expect(replay.writes).to.be.greaterThan(0);
    expect(replay.ioLog).to.be.greaterThan(0);
    expect(blockCopy.ioLog).to.equal(0);
    // 8 files of 64 KiB: at least their data travels as blocks; the I/O log sends a small fraction of that.
    expect(blockCopy.diskBlocks).to.be.greaterThanOrEqual(8 * 64 * 1024);
    expect(replay.diskBlocks).to.be.lessThan(blockCopy.diskBlocks / 4);
    await page.screenshot({ path: `${SCREENSHOTS}mid-demo.png` });
  });

  it("pull the plug: the secondary takes over and answers the next command with the file written before", async () => {
    await typeAndWait(0, "A", "echo before-plug > /mnt/plug.txt && sync && echo sync''ed", "synced");
    const primaryBefore = (await node("A")).metrics!;
    expect(primaryBefore.syncs).to.be.greaterThan(0);
    await page.click("#pull-plug");
    expect((await node("A")).alive).to.equal(false);
    await stateIs("C", "active");
    const takeover = await until("the takeover's metrics", async () => {
      const view = await node("C");
      return view.metrics?.failoverMs !== undefined ? view : undefined;
    });
    expect(takeover.status!.runsGuest).to.equal(true);
    expect(takeover.status!.epoch).to.equal(2);
    expect(takeover.metrics!.failoverMs).to.be.a("number");
    expect(takeover.metrics!.syncs, "the replica applied syncs").to.be.greaterThan(0);
    // C took over B's pane, the right one.
    await typeAndWait(1, "C", "cat /mnt/plug.txt", "before-plug");
    await page.screenshot({ path: `${SCREENSHOTS}after-takeover.png` });
  });

  it("says so, and starts nothing, when the page is not a secure context", async () => {
    // Any name but localhost/127.0.0.1 over plain http is insecure: map one to this server.
    const insecure = await launchChromium([`--host-resolver-rules=MAP demo.test ${new URL(server.url).host}`]);
    try {
      const other = await insecure.newPage();
      await other.goto(`http://demo.test:${new URL(server.url).port}/`);
      await other.waitForSelector("body[data-blocked=true]");
      expect(await other.locator("#messages").innerText()).to.contain("not a secure context");
      expect(await other.evaluate(() => (window as unknown as { twinvmDemo: { nodes(): unknown[] } }).twinvmDemo.nodes())).to.deep.equal([]);
    } finally {
      await insecure.close();
    }
  });
});
