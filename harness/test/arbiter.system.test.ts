// The arbiter with real node processes: the test process is the witness (startPair's
// `arbiter`), the replication link runs through the fault proxy. A silent cut with both
// nodes alive leaves the guest answering where it ran (the primary's hold), and only there; a
// SIGKILLed or frozen primary is found and replaced within the short peer timeout an arbiter
// makes safe.
import { expect } from "chai";
import { createGuestTemplate, startPair, type GuestTemplate, type Pair } from "../testing/index.ts";

/** The node started in `role` (the pair's nodes are listed in start order: the secondary first). */
function started(pair: Pair, role: "primary" | "secondary") {
  return pair.nodes.find((node) => node.startedAs === role)!;
}

/** Whether the guest answers on the node started in `role` right now (a fenced or standby node refuses exec). */
async function answers(pair: Pair, role: "primary" | "secondary"): Promise<boolean> {
  const node = started(pair, role);
  if (!node.running) return false;
  return node.process.exec("echo alive", 30_000).then(
    (result) => result.output === "alive\n",
    () => false,
  );
}

describe("the arbiter (real processes, the test process as the witness)", function () {
  this.timeout(600_000);
  let template: GuestTemplate;
  let pair: Pair | undefined;

  before(async () => {
    template = await createGuestTemplate({ disks: [{ sizeBytes: 16 << 20 }] });
  });

  afterEach(async () => {
    await pair?.stop();
    pair = undefined;
  });

  after(async () => {
    await template.dispose();
  });

  it("a silent link cut with both nodes alive: the primary keeps the guest, and the secondary refuses to run it", async () => {
    pair = await startPair({ template, arbiter: true, reprotect: false });
    const cutAt = performance.now();
    pair.cutLink("silent");
    // The secondary, refused while the primary's hold lasts, asks again until the primary's lease (it runs on) settles it.
    const deadline = performance.now() + 30_000;
    let outcome = "";
    for (;;) {
      const [primary, secondary] = [started(pair, "primary").process.states, started(pair, "secondary").process.states];
      if (primary.includes("fenced")) outcome = "the secondary took over, the primary is fenced";
      else if (secondary.includes("standby") && primary.includes("unprotected") && pair.witness?.leased === true) outcome = "the primary kept the guest";
      if (outcome !== "" || performance.now() > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(outcome, pair.describe()).to.equal("the primary kept the guest");
    expect(pair.witness).to.include({ epoch: 1, holder: started(pair, "primary").name });
    console.log(`      the primary kept the guest, its lease granted ${(performance.now() - cutAt).toFixed(0)} ms after the cut`);
    const running = [await answers(pair, "primary"), await answers(pair, "secondary")];
    expect(running, "answering: primary, secondary").to.deep.equal([true, false]);
  });

  it("a SIGKILLed primary is replaced within the short timeout: fault to an answering guest, measured", async () => {
    pair = await startPair({ template, arbiter: true, reprotect: false });
    const killed = performance.now();
    await pair.killPrimary();
    await pair.waitForTakeover({ timeoutMs: 30_000 });
    expect((await pair.exec("echo alive")).output).to.equal("alive\n");
    console.log(`      fault to answer: ${(performance.now() - killed).toFixed(0)} ms`);
  });

  it("a primary that freezes (SIGSTOP) is replaced after the peer timeout, and once thawed, superseded, it fences itself", async () => {
    pair = await startPair({ template, arbiter: true, reprotect: false });
    const frozenAt = performance.now();
    // A frozen host neither talks nor renews its lease: the witness grants the secondary the
    // next epoch. (A stalled link with both nodes alive stays with the primary: the first test.)
    const oldPrimary = pair.freezePrimary();
    await pair.waitForTakeover({ timeoutMs: 30_000 });
    expect((await pair.exec("echo alive")).output).to.equal("alive\n");
    console.log(`      frozen primary to answer: ${(performance.now() - frozenAt).toFixed(0)} ms`);
    pair.thaw(oldPrimary);
    const deadline = performance.now() + 20_000;
    while (!oldPrimary.process.states.includes("fenced") && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(oldPrimary.process.states, pair.describe()).to.include("fenced");
    expect(await answers(pair, "primary"), "the thawed old primary must not run the guest").to.equal(false);
  });
});
