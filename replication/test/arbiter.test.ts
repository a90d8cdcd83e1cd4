// The arbiter: the witness's rules on their own, and the engines under one when the link
// between them is cut while both live (fake guests, the in-memory link): exactly one node runs
// the guest afterwards, the primary when it is alive and says so, whichever notices the cut
// first; a node that cannot reach the witness holds its guest's I/O instead of guessing.
import { expect } from "chai";
import { WitnessCore, type Witness, type WitnessAnswer } from "../arbiter/witness.ts";
import { PrimaryEngine } from "../engine/primary/engine.ts";
import type { SecondaryEngine } from "../engine/secondary/engine.ts";
import type { MemoryPair } from "../transport/memory-pair.ts";
import { linkSecondary } from "../../test/support/engine-link.ts";
import { ManualClock } from "../../test/support/manual-clock.ts";
import { settle, waitFor } from "../../test/support/wait.ts";
import { FakeGuest } from "./fake-guest.ts";

const sector = (fill: number) => new Uint8Array(512).fill(fill);

describe("the witness's rules", () => {
  it("grants the first claim and each higher epoch, refuses a stale one", () => {
    const witness = new WitnessCore({ leaseMs: 500, clock: new ManualClock() });
    expect(witness.claimNow("a", 1)).to.deep.include({ granted: true, epoch: 1 });
    expect(witness.claimNow("b", 1)).to.deep.include({ granted: false, epoch: 1 });
    expect(witness.renewNow("b", 1)).to.deep.include({ granted: false });
  });

  it("refuses a takeover while the holder's lease is valid, grants it once the lease ran out", async () => {
    const clock = new ManualClock();
    const witness = new WitnessCore({ leaseMs: 500, clock });
    expect(witness.renewNow("primary", 1).granted).to.equal(true);
    const refused = witness.claimNow("secondary", 2);
    expect(refused.granted).to.equal(false);
    expect(refused)
      .to.have.property("reason")
      .that.matches(/primary holds a lease on epoch 1/);
    await clock.advance(501);
    expect(witness.claimNow("secondary", 2)).to.deep.include({ granted: true, epoch: 2 });
    expect(witness.renewNow("primary", 1)).to.deep.include({ granted: false, epoch: 2, holder: "secondary" });
  });
});

describe("the witness's holds", () => {
  it("refuses a takeover while the protected holder's hold lasts, saying when to ask again, and grants it after", async () => {
    const clock = new ManualClock();
    const witness = new WitnessCore({ leaseMs: 500, clock });
    expect(witness.holdNow("primary", 1, 150)).to.deep.include({ granted: true, epoch: 1, leaseMs: 150 });
    await clock.advance(40);
    const refused = witness.claimNow("secondary", 2);
    expect(refused).to.deep.include({ granted: false, epoch: 1, holder: "primary", retryInMs: 110 });
    expect(refused)
      .to.have.property("reason")
      .that.matches(/primary said 40 ms ago that it is alive and protected/);
    await clock.advance(110);
    expect(witness.claimNow("secondary", 2)).to.deep.include({ granted: true, epoch: 2 });
    expect(witness.leased).to.equal(true);
    // The old primary, still holding, learns it was superseded.
    expect(witness.holdNow("primary", 1, 150)).to.deep.include({ granted: false, epoch: 2, holder: "secondary" });
  });

  it("a holder that took its lease (it lost its secondary and runs on) refuses the takeover for good", async () => {
    const clock = new ManualClock();
    const witness = new WitnessCore({ leaseMs: 500, clock });
    witness.holdNow("primary", 1, 150);
    expect(witness.leased).to.equal(false);
    expect(witness.renewNow("primary", 1).granted).to.equal(true);
    const refused = witness.claimNow("secondary", 2);
    expect(refused.granted).to.equal(false);
    expect(refused).not.to.have.property("retryInMs");
    // Protected again: the lease is handed back, a takeover waits only for the hold.
    witness.holdNow("primary", 1, 150);
    expect(witness.leased).to.equal(false);
    expect(witness.claimNow("secondary", 2)).to.have.property("retryInMs", 150);
  });

  it("a holder whose connection to the witness closed (a crash) loses its hold at once, not a lease", async () => {
    const clock = new ManualClock();
    const witness = new WitnessCore({ leaseMs: 500, clock });
    witness.holdNow("primary", 1, 150);
    witness.gone("secondary");
    expect(witness.claimNow("secondary", 2)).to.have.property("retryInMs");
    witness.gone("primary");
    expect(witness.claimNow("secondary", 2)).to.deep.include({ granted: true, epoch: 2 });
    // A lease is relied on by a node that may be alive: it runs out, it is not dropped.
    witness.renewNow("secondary", 2);
    witness.gone("secondary");
    expect(witness.claimNow("third", 3)).to.deep.include({ granted: false });
    expect(witness.claimNow("third", 3)).not.to.have.property("retryInMs");
  });

  it("a hold never outlasts a lease", () => {
    const witness = new WitnessCore({ leaseMs: 500, clock: new ManualClock() });
    expect(witness.holdNow("primary", 1, 60_000)).to.deep.include({ granted: true, leaseMs: 500 });
    expect(witness.claimNow("secondary", 2)).to.have.property("retryInMs", 500);
  });
});

/** A witness whose answers the test can delay or cut off, for everyone or for one node. */
class ControlledWitness implements Witness {
  reachable = true;
  readonly unreachableFrom = new Set<string>();
  readonly asked: string[] = [];
  constructor(readonly core: WitnessCore) {}
  claim(node: string, epoch: number): Promise<WitnessAnswer> {
    return this.#ask(node, `claim ${node} ${epoch}`, () => this.core.claim(node, epoch));
  }
  renew(node: string, epoch: number): Promise<WitnessAnswer> {
    return this.#ask(node, `renew ${node} ${epoch}`, () => this.core.renew(node, epoch));
  }
  hold(node: string, epoch: number, holdMs: number): Promise<WitnessAnswer> {
    return this.#ask(node, `hold ${node} ${epoch}`, () => this.core.hold(node, epoch, holdMs));
  }
  #ask(node: string, question: string, answer: () => Promise<WitnessAnswer>): Promise<WitnessAnswer> {
    this.asked.push(question);
    return this.reachable && !this.unreachableFrom.has(node) ? answer() : Promise.reject(new Error("no route to the witness"));
  }
}

interface ArbitratedPair {
  primaryGuest: FakeGuest;
  primary: PrimaryEngine;
  secondary: SecondaryEngine;
  link: MemoryPair;
}

async function arbitratedPair(
  witness: Witness,
  peerTimeoutMs = { primary: 300, secondary: 300 },
  onSecondaryLoss: "continue" | "stall" = "continue",
): Promise<ArbitratedPair> {
  const primaryGuest = new FakeGuest();
  const primary = new PrimaryEngine(primaryGuest, {
    mode: "logging-replay",
    onSecondaryLoss,
    witness,
    nodeName: "primary",
    peerTimeoutMs: peerTimeoutMs.primary,
    heartbeatIntervalMs: 50,
  });
  const { secondary, link, channel } = await linkSecondary(primary, new FakeGuest(), {
    secondary: { witness, nodeName: "secondary", peerTimeoutMs: peerTimeoutMs.secondary },
  });
  await primary.protect(channel);
  expect(primary.state).to.equal("protected");
  return { primaryGuest, primary, secondary, link };
}

describe("the engines under an arbiter", function () {
  this.timeout(20_000);

  it("a link cut, the primary asking first: it keeps the guest (its writes complete), the secondary holds its replica", async () => {
    const witness = new ControlledWitness(new WitnessCore({ leaseMs: 2000 }));
    // The secondary notices the silence later than the primary notices the closed link.
    const pair = await arbitratedPair(witness, { primary: 300, secondary: 1500 });
    const released: string[] = [];
    pair.primary.outputs.onRelease("console", (bytes) => released.push(new TextDecoder().decode(bytes)));
    pair.link.silence();
    await waitFor(() => pair.primary.state === "unprotected", "the primary to notice");
    expect(await pair.primaryGuest.write(8, sector(1)).completion).to.equal("ok");
    pair.primaryGuest.print("still here");
    await waitFor(() => released.join("") === "still here", "output under the lease");
    await waitFor(() => pair.secondary.state === "standby", "the secondary to stand by", 5000);
    expect(pair.secondary.state).to.equal("standby");
    expect(witness.core.holder).to.equal("primary");
    await pair.primary.close();
  });

  it("a link cut, the secondary noticing first: the primary's hold keeps the guest where it runs, the secondary stands by", async () => {
    const witness = new ControlledWitness(new WitnessCore({ leaseMs: 2000 }));
    const pair = await arbitratedPair(witness, { primary: 1000, secondary: 300 });
    expect(witness.asked).to.include("hold primary 1");
    pair.link.silence();
    await waitFor(() => pair.primary.state === "unprotected", "the primary to notice", 5000);
    expect(await pair.primaryGuest.write(8, sector(1)).completion).to.equal("ok");
    await waitFor(() => witness.core.leased, "the primary's lease");
    // Refused while the hold lasted, the secondary asked again until the primary's lease made it final.
    await new Promise((resolve) => setTimeout(resolve, 800));
    expect(pair.secondary.state).to.equal("standby");
    expect(witness.core).to.include({ epoch: 1, holder: "primary" });
    expect(witness.asked.filter((question) => question === "claim secondary 2").length).to.be.at.least(2);
    await pair.primary.close();
    await pair.secondary.close();
  });

  it("a primary cut off from both (its holds stop): the secondary takes over once the hold ran out; the primary learns it lost and fences itself, its write never completing", async () => {
    const witness = new ControlledWitness(new WitnessCore({ leaseMs: 2000 }));
    const pair = await arbitratedPair(witness, { primary: 1000, secondary: 300 });
    // Nothing crosses any more, and neither end hears a close.
    witness.unreachableFrom.add("primary");
    pair.link.silence();
    const cutAt = performance.now();
    await waitFor(() => pair.secondary.state === "active", "the secondary to take over", 5000);
    expect(performance.now() - cutAt, "the secondary waits out the primary's last hold (750 ms) at most").to.be.below(1500);
    expect(witness.core).to.include({ epoch: 2, holder: "secondary" });
    witness.unreachableFrom.delete("primary");
    await waitFor(() => pair.primary.state === "fenced", "the primary to fence itself", 5000);
    const write = pair.primaryGuest.write(16, sector(2));
    await settle();
    expect(write.completed(), "a fenced primary's guest waits for ever").to.equal(false);
    await pair.secondary.close();
  });

  it("a crashed primary (its link and its connection to the witness closed): the secondary takes over without waiting out the hold", async () => {
    const witness = new ControlledWitness(new WitnessCore({ leaseMs: 2000 }));
    // A hold of 750 ms: without the witness hearing of the crash, the takeover would wait up to that.
    const pair = await arbitratedPair(witness, { primary: 1000, secondary: 1000 });
    await waitFor(() => witness.asked.includes("hold primary 1"), "the primary's hold");
    witness.unreachableFrom.add("primary");
    pair.link.cut("the primary crashed");
    const crashedAt = performance.now();
    setTimeout(() => witness.core.gone("primary"), 50);
    await waitFor(() => pair.secondary.state === "active", "the secondary to take over", 5000);
    expect(performance.now() - crashedAt).to.be.below(400);
    await pair.secondary.close();
    await pair.primary.close();
  });

  it("under `stall` the primary does not hold: a link cut goes to the secondary", async () => {
    const witness = new ControlledWitness(new WitnessCore({ leaseMs: 2000 }));
    const pair = await arbitratedPair(witness, { primary: 1000, secondary: 300 }, "stall");
    expect(witness.asked.filter((question) => question.startsWith("hold"))).to.deep.equal([]);
    pair.link.silence();
    await waitFor(() => pair.secondary.state === "active", "the secondary to take over", 5000);
    await waitFor(() => pair.primary.state === "fenced", "the primary to fence itself", 5000);
    await pair.secondary.close();
  });

  it("a handover gives the primary's hold back: the new primary's first lease is granted at once", async () => {
    const witness = new ControlledWitness(new WitnessCore({ leaseMs: 2000 }));
    const pair = await arbitratedPair(witness, { primary: 1000, secondary: 1000 });
    await waitFor(() => witness.asked.includes("hold primary 1"), "the primary's hold");
    await pair.primary.handOver("a test");
    expect(pair.secondary.state).to.equal("active");
    expect(witness.core.renewNow("secondary", 2)).to.deep.include({ granted: true, epoch: 2 });
    await pair.secondary.close();
  });

  it("an unprotected primary that cannot reach the witness holds its guest's writes and output until it can", async () => {
    const witness = new ControlledWitness(new WitnessCore({ leaseMs: 400 }));
    const pair = await arbitratedPair(witness, { primary: 300, secondary: 5000 });
    const released: string[] = [];
    pair.primary.outputs.onRelease("console", (bytes) => released.push(new TextDecoder().decode(bytes)));
    witness.reachable = false;
    await pair.secondary.close();
    await waitFor(() => pair.primary.state === "unprotected", "the primary to notice");
    const write = pair.primaryGuest.write(8, sector(3));
    pair.primaryGuest.print("held");
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(write.completed()).to.equal(false);
    expect(released).to.deep.equal([]);
    witness.reachable = true;
    expect(await write.completion).to.equal("ok");
    await waitFor(() => released.join("") === "held", "the output once the witness answers");
    await pair.primary.close();
  });
});
