// The engines against a fake guest and the in-memory link: no boot, no fixed sleeps. A link
// that fails at each phase of the initial sync and of a sync round, a secondary that never
// acknowledges, a secondary whose disk fails, a batch larger than a sync may carry, input
// the secondary refuses, a primary that leaves while the secondary hashes its disks. Each
// test asserts what happens to the guest's pending writes: released or held per policy,
// never dropped.
import { expect } from "chai";
import { MemoryBackend } from "../../emulator/block/memory-backend.ts";
import type { ReplicationChannel } from "../channel/channel.ts";
import {
  DEFAULT_OUTPUT_COALESCE_MS as COALESCE_MS,
  DEFAULT_SYNC_INTERVAL_MS as INTERVAL_MS,
  MAX_DEFERRED_WRITES,
  MIN_DEFAULT_ACK_TIMEOUT_MS,
  PrimaryEngine,
  type DiskMode,
  type SecondaryLossPolicy,
  type SyncMode,
} from "../engine/primary/engine.ts";
import { SecondaryEngine } from "../engine/secondary/engine.ts";
import type { BinaryFrame } from "../protocol/frames.ts";
import { MAX_FRAME_BYTES, MAX_SYNC_DISK_BYTES } from "../protocol/limits.ts";
import type { MemoryPair } from "../transport/memory-pair.ts";
import { SECTOR_SIZE } from "../../emulator/units.ts";
import type { Clock } from "../clock.ts";
import { linkSecondary, linkedChannels } from "../../test/support/engine-link.ts";
import { ManualClock } from "../../test/support/manual-clock.ts";
import { settle, waitFor } from "../../test/support/wait.ts";
import { FailingBackend, FakeGuest, SlowFlushBackend, type Submitted } from "./fake-guest.ts";

interface Pair {
  primaryGuest: FakeGuest;
  secondaryGuest: FakeGuest;
  primary: PrimaryEngine;
  secondary: SecondaryEngine;
  link: MemoryPair;
  /** The primary's channel: tests wrap its sendFrame to act at a phase. */
  channel: ReplicationChannel;
  log: string[];
}

interface PairOptions {
  mode?: DiskMode;
  policy?: SecondaryLossPolicy;
  primaryGuest?: FakeGuest;
  secondaryGuest?: FakeGuest;
  /** Runs on each frame the primary sends, before it goes out. */
  beforeFrame?: (frame: BinaryFrame, pair: Pair) => void;
  /** Runs on each frame the primary sent, after it went out. */
  afterFrame?: (frame: BinaryFrame, pair: Pair) => void;
  peerTimeoutMs?: number;
  /** Default: the peer timeout (these tests time a stuck secondary on a short clock); "engine": the engine's own default. */
  ackTimeoutMs?: number | "engine";
  /** Default synchronous (Kemari): most of these tests follow a write's completion to its sync's acknowledgement. */
  syncMode?: SyncMode;
  /** Adjusts the secondary's channel before it is attached. */
  secondaryChannel?: (channel: ReplicationChannel) => void;
  clock?: Clock;
}

function newPrimary(options: PairOptions, primaryGuest = options.primaryGuest ?? new FakeGuest()): PrimaryEngine {
  return new PrimaryEngine(primaryGuest, {
    mode: options.mode ?? "logging-replay",
    onSecondaryLoss: options.policy ?? "continue",
    peerTimeoutMs: options.peerTimeoutMs ?? 400,
    ...(options.ackTimeoutMs !== "engine" && { ackTimeoutMs: options.ackTimeoutMs ?? options.peerTimeoutMs ?? 400 }),
    heartbeatIntervalMs: 50,
    ...(options.clock && { clock: options.clock }),
    syncMode: options.syncMode ?? "synchronous",
  });
}

async function startPair(options: PairOptions = {}): Promise<Pair> {
  const primaryGuest = options.primaryGuest ?? new FakeGuest();
  const pair = { primaryGuest, primary: newPrimary(options, primaryGuest), log: [] as string[] } as Pair;
  await attachSecondary(pair, options);
  return pair;
}

async function attachSecondary(pair: Pair, options: PairOptions = {}): Promise<void> {
  const secondaryGuest = options.secondaryGuest ?? new FakeGuest();
  const { secondary, link, channel } = await linkSecondary(pair.primary, secondaryGuest, {
    secondary: { peerTimeoutMs: 400, log: (line) => pair.log.push(line), ...(options.clock && { clock: options.clock }) },
    ...(options.secondaryChannel && { beforeAttach: options.secondaryChannel }),
  });
  Object.assign(pair, { secondaryGuest, secondary, link, channel });
  const send = channel.sendFrame.bind(channel);
  channel.sendFrame = async (frame, encode) => {
    options.beforeFrame?.(frame, pair);
    const bytes = await send(frame, encode);
    options.afterFrame?.(frame, pair);
    return bytes;
  };
  // A sync's frames share records unless they are large; frame by frame here, so that a cut can
  // fall between any two of them (as it can between the records of a large sync).
  channel.sendFrames = async (frames, encode) => {
    const sizes: number[] = [];
    for (const frame of frames) sizes.push(await channel.sendFrame(frame, encode));
    return sizes;
  };
  channel.sendFramesNow = () => undefined; // every sync through the wrappers above
  await pair.primary.protect(channel);
}

const until = (condition: () => boolean, what: string, ms = 3000) => waitFor(condition, what, ms);

/** Holds back the secondary's sync acks (it applies the syncs) until `release`, which sends them and stops holding. */
/** A secondary that answers everything but sync acks (a stuck apply that still heartbeats). */
function neverAcknowledges(channel: ReplicationChannel): void {
  const send = channel.send.bind(channel);
  channel.send = (message) => (message.type === "sync-ack" ? Promise.resolve(0) : send(message));
}

function ackGate(): { secondaryChannel: (channel: ReplicationChannel) => void; release(): void } {
  const held: (() => Promise<number>)[] = [];
  let holding = true;
  return {
    secondaryChannel(channel) {
      const send = channel.send.bind(channel);
      channel.send = (message) => {
        if (message.type !== "sync-ack" || !holding) return send(message);
        held.push(() => send(message));
        return Promise.resolve(0);
      };
    },
    release() {
      holding = false;
      for (const send of held.splice(0)) void send();
    },
  };
}

function sector(n: number, fill: number): Uint8Array {
  return new Uint8Array(SECTOR_SIZE * n).fill(fill);
}

describe("replication engines against a fake guest", function () {
  this.timeout(20_000);

  it("protects, syncs a write with its pages, state and I/O log, and completes it on the ack", async () => {
    const pair = await startPair();
    expect(pair.primary.state).to.equal("protected");
    expect(pair.secondary.state).to.equal("replicating");
    pair.primaryGuest.touch(3, 0x11);
    const write = pair.primaryGuest.write(40, sector(8, 0x5a));
    expect(await write.completion).to.equal("ok");
    const secondaryDisk = (pair.secondaryGuest.disks[0]!.backend as MemoryBackend).bytes;
    await until(() => secondaryDisk[40 * 512] === 0x5a, "the replayed write on the secondary's disk");
    // The secondary's replica RAM equals the primary's as of the capture.
    expect(Buffer.compare(pair.secondaryGuest.ram(), pair.primaryGuest.ram())).to.equal(0);
    expect(pair.primary.metrics.syncs).to.be.greaterThan(0);
    expect(pair.primary.metrics.bytes.diskBlocks).to.equal(0);
    await pair.primary.close();
  });

  it("puts a sync on the wire from its capture, before the boundary's work returns (inside the guest's slice nothing awaited would run); compressed syncs go the queued way", async () => {
    for (const compressSyncs of [false, true]) {
      const primaryGuest = new FakeGuest();
      const primary = new PrimaryEngine(primaryGuest, { mode: "logging-replay", onSecondaryLoss: "continue", syncMode: "synchronous", compressSyncs });
      const secondaryGuest = new FakeGuest();
      const { link, channel } = await linkSecondary(primary, secondaryGuest);
      await primary.protect(channel);
      let records = 0;
      const send = link.a.sendBinary.bind(link.a);
      link.a.sendBinary = (bytes) => {
        records++;
        send(bytes);
      };
      const sentDuringCapture: number[] = [];
      primaryGuest.atNextBoundary = <T>(work: () => T) =>
        Promise.resolve().then(() => {
          const before = records;
          const result = work();
          sentDuringCapture.push(records - before);
          return result;
        });
      expect(await primaryGuest.write(40, sector(8, 0x5a)).completion).to.equal("ok");
      expect(sentDuringCapture, compressSyncs ? "compressed: after the boundary" : "the sync's record, sent by the capture").to.deep.equal([
        compressSyncs ? 0 : 1,
      ]);
      const secondaryDisk = (secondaryGuest.disks[0]!.backend as MemoryBackend).bytes;
      await until(() => secondaryDisk[40 * 512] === 0x5a, "the replayed write on the secondary's disk");
      await primary.close();
    }
  });

  it("lets the event loop turn between the ranges of the live initial copy (the guest and the heartbeats run)", async () => {
    const primaryGuest = new FakeGuest();
    const copy = primaryGuest.copyPages.bind(primaryGuest);
    const turned: boolean[] = [];
    let macrotaskRan = true;
    // Small ranges, mostly of zero pages: they send nothing, so nothing else makes the loop wait.
    primaryGuest.copyPages = (maxPages) => {
      turned.push(macrotaskRan);
      macrotaskRan = false;
      setImmediate(() => (macrotaskRan = true));
      return copy(Math.min(maxPages, 4));
    };
    const pair = await startPair({ primaryGuest });
    expect(turned.length).to.be.greaterThan(8);
    expect(turned.every(Boolean), `turns between ranges: ${turned.join(" ")}`).to.equal(true);
    await pair.primary.close();
  });

  for (const policy of ["continue", "stall"] as const) {
    it(`${policy}: console output during a new secondary's copy ${policy === "continue" ? "goes out at once until the copy's last boundary, then waits for a sync" : "waits for the copy"}`, async () => {
      const primaryGuest = new FakeGuest();
      const primary = newPrimary({ policy }, primaryGuest);
      const released: string[] = [];
      primary.outputs.onRelease("console", (bytes) => released.push(new TextDecoder().decode(bytes)));
      const seenDuringCopy: string[][] = [];
      const copy = primaryGuest.copyPages.bind(primaryGuest);
      primaryGuest.copyPages = (maxPages) => {
        if (seenDuringCopy.length === 0) {
          primaryGuest.print("during the copy");
          seenDuringCopy.push([...released]);
        }
        return copy(maxPages);
      };
      const finish = primaryGuest.finishFullCopy.bind(primaryGuest);
      primaryGuest.finishFullCopy = () => {
        const end = finish();
        primaryGuest.print("after the last boundary");
        return end;
      };
      const pair = { primaryGuest, primary, log: [] as string[] } as Pair;
      const ackHeld: (() => void)[] = [];
      await Promise.race([
        attachSecondary(pair, {
          secondaryChannel: (channel) => {
            const send = channel.send.bind(channel);
            channel.send = (message) => {
              if (message.type !== "init-ack") return send(message);
              // The init-ack waits until the test looked at what was released before it.
              return new Promise((resolve) => ackHeld.push(() => resolve(send(message))));
            };
          },
        }),
        waitFor(() => ackHeld.length === 1, "the secondary's init-ack", 3000),
      ]);
      expect(primary.state).to.equal("initial-sync");
      expect(seenDuringCopy[0], "released as soon as printed").to.deep.equal(policy === "continue" ? ["during the copy"] : []);
      expect(released, "output after the copy's last boundary waits for the secondary").to.deep.equal(policy === "continue" ? ["during the copy"] : []);
      ackHeld[0]!();
      await until(() => primary.state === "protected", "protected");
      await until(() => released.join("") === "during the copyafter the last boundary", "the held output, in order, after a sync covers it");
      await primary.close();
    });
  }

  it("a capture that fails after taking the requests hands them back: released under continue, never dropped", async () => {
    const pair = await startPair({ policy: "continue" });
    // A request the encoder cannot log (no such disk) makes the capture throw mid-way.
    const gate = pair.primaryGuest.hook.emit({
      disk: "vdz",
      type: "write",
      sector: 0,
      sectors: 1,
      segments: [{ gpa: 0, length: 512 }],
      data: new Uint8Array(512),
    });
    const outcome = await Promise.race([gate?.then(() => "released"), new Promise((resolve) => setTimeout(() => resolve("still held after 2 s"), 2000))]);
    expect(outcome).to.equal("released");
    expect(pair.primary.state).to.equal("unprotected");
    await pair.primary.close();
  });

  it("keeps the guest's slices short while a sync waits for its ack, and only then", async () => {
    const seen: boolean[] = [];
    const pair = await startPair({ beforeFrame: (frame, p) => void (frame.kind === "sync-commit" && seen.push(p.primaryGuest.eagerYielding)) });
    expect(pair.primaryGuest.eagerYielding, "after the initial sync").to.equal(false);
    expect(await pair.primaryGuest.write(40, sector(8, 0x5a)).completion).to.equal("ok");
    expect(seen, "while sync 1 was on its way").to.deep.equal([true]);
    expect(pair.primaryGuest.eagerYielding, "once it was acknowledged").to.equal(false);
    pair.link.cut("cable pulled");
    await until(() => pair.primary.state === "unprotected", "the primary to notice the loss");
    expect(pair.primaryGuest.eagerYielding).to.equal(false);
    await pair.primary.close();
  });

  describe("a link cut at each phase", () => {
    type Phase = "initial-sync" | "captured, nothing sent" | "pages sent, no commit" | "commit sent, no ack";
    const phases: [Phase, (frame: BinaryFrame, pair: Pair, when: "before" | "after") => boolean][] = [
      ["initial-sync", (frame, _pair, when) => when === "before" && frame.kind === "state-parts"],
      ["captured, nothing sent", (frame, _pair, when) => when === "before" && frame.seq === 1],
      ["pages sent, no commit", (frame, _pair, when) => when === "after" && frame.kind === "page-updates" && frame.seq === 1],
      ["commit sent, no ack", (frame, _pair, when) => when === "after" && frame.kind === "sync-commit" && frame.seq === 1],
    ];
    for (const policy of ["continue", "stall"] as const) {
      for (const [phase, cutHere] of phases) {
        it(`${policy}, cut at "${phase}": the pending write is ${policy === "continue" ? "released" : "held, then completed by the next secondary"}`, async () => {
          let armed = phase !== "initial-sync";
          const primaryGuest = new FakeGuest();
          let pending: Submitted | undefined;
          const cut = (when: "before" | "after") => (frame: BinaryFrame, pair: Pair) => {
            if (!armed || !cutHere(frame, pair, when)) return;
            armed = false;
            pair.link.cut("cable pulled");
          };
          const options: PairOptions = { policy, primaryGuest, beforeFrame: cut("before"), afterFrame: cut("after") };
          if (phase === "initial-sync") {
            // A write the guest made before the copy: the copy covers it.
            armed = true;
            primaryGuest.touch(2, 7);
            const pair = { primaryGuest, primary: newPrimary(options, primaryGuest), log: [] } as unknown as Pair;
            await attachSecondary(pair, {
              ...options,
              beforeFrame: (frame, p) => {
                if (frame.kind === "state-parts" && pending === undefined) pending = primaryGuest.write(8, sector(1, 1));
                cut("before")(frame, p);
              },
            });
            await checkOutcome(pair);
            return;
          }
          const pair = await startPair(options);
          pending = primaryGuest.write(8, sector(1, 0x42));
          await checkOutcome(pair);

          async function checkOutcome(p: Pair): Promise<void> {
            await until(() => p.primary.state === "unprotected", "the primary to notice the loss");
            if (policy === "continue") {
              expect(await pending!.completion).to.equal("ok");
              expect(await primaryGuest.write(16, sector(1, 0x43)).completion).to.equal("ok", "later writes complete unprotected");
              return;
            }
            // The metrics count write completions as output commit does (the campaign's stall check reads them).
            const completions = () => p.primary.metrics.snapshot().output!.completion;
            const atLoss = completions();
            await settle();
            expect(pending!.completed(), "held while no secondary protects the guest").to.equal(false);
            const later = primaryGuest.write(16, sector(1, 0x44));
            await settle();
            expect(later.completed()).to.equal(false);
            expect(p.primary.heldRequests).to.be.greaterThan(0);
            expect(completions().released, "no completion released while stalled").to.equal(atLoss.released);
            expect(completions().held - completions().released).to.equal(p.primary.heldRequests);
            await attachSecondary(p);
            expect(p.primary.state).to.equal("protected");
            expect(await pending!.completion).to.equal("ok");
            expect(await later.completion).to.equal("ok");
            expect(completions().released - atLoss.released).to.be.at.least(2);
            const disk = (p.secondaryGuest.disks[0]!.backend as MemoryBackend).bytes;
            await until(() => disk[16 * 512] === 0x44, "both writes on the new secondary's disk");
            expect(disk[8 * 512]).to.equal(phase === "initial-sync" ? 1 : 0x42);
          }
        });
      }
    }
  });

  it("a secondary that answers heartbeats but never acknowledges a sync is a loss (ack timeout), exactly when the timeout passes", async () => {
    const reasons: string[] = [];
    const clock = new ManualClock();
    const pair = await startPair({
      clock,
      secondaryChannel: neverAcknowledges,
    });
    pair.primary.onStateChange((state, reason) => reasons.push(`${state}: ${reason}`));
    const write = pair.primaryGuest.write(24, sector(2, 9));
    await settle();
    // Heartbeats keep both sides alive; the sync stays unacknowledged up to the timeout...
    await clock.advance(350);
    expect(pair.primary.state).to.equal("protected");
    expect(write.completed()).to.equal(false);
    // ...and is a loss at the first check after it.
    await clock.advance(100);
    expect(await write.completion).to.equal("ok"); // continue: released by the loss, not by an ack
    expect(pair.primary.state).to.equal("unprotected");
    expect(reasons.join("\n")).to.match(/sync 1 not acknowledged within 400 ms/);
    expect(pair.secondary.state, "the secondary heard heartbeats all along").to.equal("standby");
  });

  it("a slow link that still takes this side's bytes is not a stuck secondary: the ack wait counts from when nothing is left to send", async () => {
    const reasons: string[] = [];
    const clock = new ManualClock();
    const pair = await startPair({
      clock,
      secondaryChannel: neverAcknowledges,
    });
    // Bytes this side has queued for the link and not yet handed to it (a burst over a slow link).
    let queued = 1;
    Object.defineProperty(pair.channel, "bufferedAmount", { get: () => queued });
    pair.primary.onStateChange((state, reason) => reasons.push(`${state}: ${reason}`));
    const write = pair.primaryGuest.write(24, sector(2, 9));
    await settle();
    await clock.advance(2000);
    expect(pair.primary.state, "five ack timeouts, the link still busy with what this side sent").to.equal("protected");
    queued = 0;
    await clock.advance(300);
    expect(pair.primary.state).to.equal("protected");
    await clock.advance(200);
    expect(pair.primary.state, "the secondary has everything and answers nothing").to.equal("unprotected");
    expect(await write.completion).to.equal("ok");
    expect(reasons.join("\n")).to.match(/sync 1 not acknowledged within 400 ms/);
  });

  it("by default a short peer timeout does not shorten the ack timeout below MIN_DEFAULT_ACK_TIMEOUT_MS", async () => {
    const clock = new ManualClock();
    const pair = await startPair({ clock, peerTimeoutMs: 250, ackTimeoutMs: "engine", secondaryChannel: neverAcknowledges });
    const write = pair.primaryGuest.write(24, sector(2, 9));
    await settle();
    await clock.advance(MIN_DEFAULT_ACK_TIMEOUT_MS - 100);
    expect(pair.primary.state, "heartbeats flow; the sync is merely slow").to.equal("protected");
    expect(write.completed()).to.equal(false);
    await clock.advance(200);
    expect(pair.primary.state).to.equal("unprotected");
  });

  describe("the network", () => {
    it("holds a transmitted frame until the sync that covers it is acknowledged; a frame asks for a sync by itself", async () => {
      const acks = ackGate();
      const pair = await startPair({ secondaryChannel: acks.secondaryChannel, peerTimeoutMs: 10_000 });
      const released: string[] = [];
      pair.primary.outputs.onRelease("frame", (frame) => released.push(new TextDecoder().decode(frame)));
      pair.primaryGuest.transmit(new TextEncoder().encode("frame one"));
      await until(() => pair.secondary.metrics.syncs >= 1, "a sync for the frame alone");
      await settle();
      expect(released).to.deep.equal([]);
      acks.release();
      await until(() => released.length === 1, "the frame after the ack");
      expect(released).to.deep.equal(["frame one"]);
      await pair.primary.close();
    });

    it("reports ingress frames committed with the acknowledged sync whose capture saw them, and at once when unprotected", async () => {
      const pair = await startPair();
      const committed: number[] = [];
      pair.primary.onIngressCommitted((id) => committed.push(id));
      pair.primaryGuest.receive(1001);
      pair.primary.ingressDelivered(1001);
      expect(committed, "held until a sync covers it").to.deep.equal([]);
      pair.primaryGuest.print("x");
      await until(() => committed.includes(1001), "the ack of the sync covering ingress 1001");
      pair.link.cut("cable pulled");
      await until(() => pair.primary.state === "unprotected", "the loss");
      pair.primaryGuest.receive(1002);
      pair.primary.ingressDelivered(1002);
      expect(committed.at(-1)).to.equal(1002);
      await pair.primary.close();
    });
  });

  describe("the speculative mode", () => {
    it("completes a write at once, logs it with the output that follows, and holds that output until the sync is acknowledged", async () => {
      // The secondary applies syncs, but its acks are held back until the test lets them go.
      const acks = ackGate();
      const pair = await startPair({ syncMode: "speculative", peerTimeoutMs: 10_000, secondaryChannel: acks.secondaryChannel });
      const released: string[] = [];
      pair.primary.outputs.onRelease("console", (bytes) => released.push(new TextDecoder().decode(bytes)));
      const write = pair.primaryGuest.write(40, sector(8, 0x5a));
      expect(await write.completion, "complete without a capture or an ack").to.equal("ok");
      expect(pair.primary.metrics.syncs + pair.secondary.metrics.syncs, "nothing captured yet").to.equal(0);
      pair.primaryGuest.print("written\n");
      await until(() => pair.secondary.metrics.syncs >= 1, "the sync the output asked for, applied on the secondary");
      await settle();
      const disk = (pair.secondaryGuest.disks[0]!.backend as MemoryBackend).bytes;
      expect(disk[40 * 512], "that sync logs the write").to.equal(0x5a);
      expect(pair.primary.metrics.syncs, "no ack arrived").to.equal(0);
      expect(released, "nothing leaves before the ack").to.deep.equal([]);
      acks.release();
      await until(() => released.join("") === "written\n", "the console output after the ack");
      await pair.primary.close();
    });

    it("covers a burst of output with one capture: pieces printed within the bound share a sync, and a guest that idles is captured at once (manual clock)", async () => {
      const clock = new ManualClock();
      const pair = await startPair({ syncMode: "speculative", clock });
      const released: string[] = [];
      pair.primary.outputs.onRelease("console", (bytes) => released.push(new TextDecoder().decode(bytes)));
      const synced = pair.secondary.metrics.syncs;
      for (const piece of ["$ ec", "ho hi\r\n", "hi\r\n"]) pair.primaryGuest.print(piece);
      await clock.advance(COALESCE_MS - 1);
      await settle();
      expect(pair.secondary.metrics.syncs, "the burst waits within the bound").to.equal(synced);
      pair.primaryGuest.print("$ ");
      pair.primaryGuest.goIdle();
      await until(() => released.join("") === "$ echo hi\r\nhi\r\n$ ", "the whole burst after its ack");
      expect(pair.secondary.metrics.syncs, "one sync for the burst").to.equal(synced + 1);
      pair.primaryGuest.print("more");
      await clock.advance(COALESCE_MS);
      await until(() => released.join("").endsWith("more"), "output of a guest that runs on, at the bound");
      expect(pair.secondary.metrics.syncs).to.equal(synced + 2);
      await pair.primary.close();
    });

    it("logs writes nobody waits on in one capture at the interval's end, each as the guest submitted it (manual clock)", async () => {
      const clock = new ManualClock();
      const pair = await startPair({ syncMode: "speculative", clock });
      const synced = pair.primary.metrics.syncs;
      expect(await pair.primaryGuest.write(8, sector(1, 0x31), 12).completion).to.equal("ok");
      expect(await pair.primaryGuest.write(16, sector(1, 0x32), 13).completion).to.equal("ok");
      // The guest reuses the first buffer before the interval ends: the log must carry what the disk got, not what memory holds now.
      pair.primaryGuest.touch(12, 0x99);
      await clock.advance(INTERVAL_MS - 1);
      expect(pair.primary.metrics.syncs, "no capture before the interval's end").to.equal(synced);
      await clock.advance(1);
      await until(() => pair.primary.metrics.syncs === synced + 1, "one sync for both writes");
      const disk = (pair.secondaryGuest.disks[0]!.backend as MemoryBackend).bytes;
      expect([disk[8 * 512], disk[16 * 512]]).to.deep.equal([0x31, 0x32]);
      expect(pair.primary.metrics.inlineWrites, "the reused buffer's write travelled with its data").to.equal(1);
      await pair.primary.close();
    });

    it("completes writes at their capture once too many wait unlogged (the guest runs ahead a bounded amount)", async () => {
      const clock = new ManualClock();
      const pair = await startPair({ syncMode: "speculative", clock });
      const completions: Promise<string>[] = [];
      for (let i = 0; i <= MAX_DEFERRED_WRITES; i++) completions.push(pair.primaryGuest.write(8 + i, sector(1, i & 0xff), 12).completion);
      await Promise.all(completions.slice(0, MAX_DEFERRED_WRITES));
      // The one over the bound asked for a capture at once; no interval had to run out.
      expect(await completions[MAX_DEFERRED_WRITES]).to.equal("ok");
      await until(() => pair.primary.metrics.syncs >= 1, "the capture's ack");
      await pair.primary.close();
    });

    it("a takeover resumes from what the secondary received: a write that completed speculatively and never left is not there, and nothing printed after it was seen", async () => {
      let cutAtSync = 0;
      // `stall`: the old primary, cut off, holds what its guest printed (as a dead one would never send it).
      const pair = await startPair({
        syncMode: "speculative",
        policy: "stall",
        beforeFrame: (frame, p) => {
          if (frame.seq === cutAtSync && frame.kind === "page-updates") p.link.cut("the primary died");
        },
      });
      const released: string[] = [];
      pair.primary.outputs.onRelease("console", (bytes) => released.push(new TextDecoder().decode(bytes)));
      expect(await pair.primaryGuest.write(8, sector(1, 0x11)).completion).to.equal("ok");
      pair.primaryGuest.print("A is written\n");
      await until(() => released.join("") === "A is written\n", "the output after write A");
      // The next sync dies with the link before its first frame; its write completed at the capture.
      cutAtSync = pair.primary.metrics.syncs + 1;
      pair.primaryGuest.touch(6, 0x66);
      expect(await pair.primaryGuest.write(16, sector(1, 0x22)).completion).to.equal("ok");
      pair.primaryGuest.print("B is written\n");
      await until(() => pair.secondary.state === "active", "the secondary to take over");
      const disk = (pair.secondaryGuest.disks[0]!.backend as MemoryBackend).bytes;
      expect(disk[8 * 512], "acknowledged before the loss").to.equal(0x11);
      expect(disk[16 * 512], "never reached the secondary").to.equal(0);
      expect(pair.secondaryGuest.ram()[6 * 4096], "the replica runs from before write B").to.not.equal(0x66);
      await until(() => pair.primary.state === "unprotected", "the primary to notice");
      await settle();
      expect(released.join(""), "what was seen outside: up to the last acknowledged sync").to.equal("A is written\n");
      pair.primary.fence("test over");
    });
  });

  describe("the output a dead primary held", () => {
    const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

    it("a takeover lets out what the guest printed and sent before the state it resumes from, which the primary held for the missing ack", async () => {
      // The secondary applies the sync and acknowledges it, but the ack never reaches the primary: it dies first.
      const pair = await startPair({ policy: "stall", peerTimeoutMs: 10_000, secondaryChannel: ackGate().secondaryChannel });
      const released: string[] = [];
      pair.primary.outputs.onRelease("console", (bytes) => released.push(text(bytes)));
      pair.primary.outputs.onRelease("frame", (bytes) => released.push(text(bytes)));
      pair.primaryGuest.print("answer\n");
      pair.primaryGuest.transmit(new TextEncoder().encode("segment 1"));
      await until(() => pair.secondary.metrics.syncs >= 1, "the sync covering both, applied on the secondary");
      expect(pair.secondary.takeCarriedOutput(), "nothing to let out while the primary runs the guest").to.deep.equal([]);
      pair.link.cut("the primary died");
      await until(() => pair.secondary.state === "active", "the secondary to take over");
      const carried = pair.secondary.takeCarriedOutput();
      expect(carried.map((output) => [output.kind, text(output.bytes)])).to.deep.equal([
        ["console", "answer\n"],
        ["frame", "segment 1"],
      ]);
      expect(pair.secondary.takeCarriedOutput(), "once").to.deep.equal([]);
      expect(released, "the old primary let out nothing").to.deep.equal([]);
      expect(pair.primary.metrics.bytes.output, "the output travelled with its sync").to.be.greaterThan(0);
      pair.primary.fence("test over");
    });

    it("a primary that said goodbye lets out its output itself: a later promotion by hand repeats none of it", async () => {
      const pair = await startPair();
      const released: string[] = [];
      pair.primary.outputs.onRelease("console", (bytes) => released.push(text(bytes)));
      pair.primaryGuest.print("last words\n");
      await until(() => released.length === 1, "the output, let out on its ack");
      await pair.primary.close("shutting down");
      await until(() => pair.secondary.state === "standby", "the secondary to hold its replica");
      await pair.secondary.promote("operator");
      expect(pair.secondary.takeCarriedOutput()).to.deep.equal([]);
    });

    it("what the primary said it let out is not let out again", async () => {
      const pair = await startPair({ policy: "stall" });
      const released: string[] = [];
      pair.primary.outputs.onRelease("frame", (bytes) => released.push(text(bytes)));
      pair.primaryGuest.transmit(new TextEncoder().encode("segment 1"));
      await until(() => released.length === 1, "the frame, after its ack");
      // The next sync tells the secondary the frame is out.
      expect(await pair.primaryGuest.write(40, sector(1, 0x5a)).completion).to.equal("ok");
      pair.link.cut("the primary died");
      await until(() => pair.secondary.state === "active", "the secondary to take over");
      expect(pair.secondary.takeCarriedOutput()).to.deep.equal([]);
      pair.primary.fence("test over");
    });
  });

  it("a primary that falls silent is lost after the peer timeout, not before; the secondary takes over (manual clock)", async () => {
    const clock = new ManualClock();
    const pair = await startPair({ clock });
    // Silence: the primary's heartbeats stop reaching the secondary (the link stays open).
    const send = pair.channel.send.bind(pair.channel);
    pair.channel.send = (message) => (message.type === "heartbeat" ? Promise.resolve(0) : send(message));
    await clock.advance(390);
    expect(pair.secondary.state).to.equal("replicating");
    await clock.advance(60);
    await waitFor(() => pair.secondary.state === "active", "the secondary to take over");
    expect(pair.secondary.metrics.snapshot().failoverMs).to.be.a("number");
  });

  it("does not blame the peer for its own stalls: a timer that fires late moves the silence clock on (manual clock)", async () => {
    const clock = new ManualClock();
    const pair = await startPair({ clock });
    const send = pair.channel.send.bind(pair.channel);
    pair.channel.send = (message) => (message.type === "heartbeat" ? Promise.resolve(0) : send(message));
    // One jump of 5 s is this process stalling (every interval late at once), not 5 s of the peer's silence.
    await clock.jump(5000);
    expect(pair.secondary.state).to.equal("replicating");
    await clock.advance(450);
    await waitFor(() => pair.secondary.state === "active", "the secondary to take over once the silence is the peer's");
  });

  it("a failing replica disk makes the secondary refuse promotion and say why; the primary runs on", async () => {
    const failing = new FailingBackend(1 << 20);
    const pair = await startPair({ secondaryGuest: new FakeGuest([failing]) });
    failing.failWrites = true;
    expect(await pair.primaryGuest.write(32, sector(1, 3)).completion).to.equal("ok");
    await until(() => pair.secondary.state === "failed", "the secondary to fail");
    await until(() => pair.primary.state === "unprotected", "the primary to drop the failed secondary");
    const error = await pair.secondary.promote("operator").then(
      () => undefined,
      (e: Error) => e,
    );
    expect(error?.message).to.match(/not consistent: .*EIO/);
    expect(pair.secondaryGuest.startedWith).to.equal(undefined);
  });

  it("a takeover runs the guest only once the log's flushes ran and the replica's disks are durable", async () => {
    const slow = new SlowFlushBackend(1 << 20);
    const pair = await startPair({ syncMode: "synchronous", secondaryGuest: new FakeGuest([slow]) });
    slow.holdFlushes = true;
    expect(await pair.primaryGuest.write(32, sector(1, 3)).completion).to.equal("ok");
    expect(await pair.primaryGuest.flush().completion).to.equal("ok");
    await pair.primary.syncNow();
    await until(() => slow.flushes === 1, "the logged flush to reach the replica's disk");
    expect(await pair.primaryGuest.write(40, sector(1, 4)).completion).to.equal("ok");
    const promoted = pair.secondary.promote("operator");
    await until(() => pair.secondary.state === "promoting", "the takeover to begin");
    await settle();
    expect(pair.secondaryGuest.startedWith, "the guest's own flush first").to.equal(undefined);
    slow.releaseFlushes();
    await until(() => slow.flushes === 2, "the takeover's flush");
    await settle();
    expect(pair.secondaryGuest.startedWith, "then the writes after it").to.equal(undefined);
    slow.releaseFlushes();
    await promoted;
    expect(pair.secondaryGuest.startedWith).to.not.equal(undefined);
    pair.primary.fence("test over");
  });

  it("splits a batch larger than one sync may carry, and every write completes in order", async () => {
    const big = 4 << 20;
    const count = Math.ceil((MAX_SYNC_DISK_BYTES * 1.25) / big);
    const pair = await startPair({
      mode: "dirty-block-copy",
      peerTimeoutMs: 10_000, // tens of MiB through encryption on a loaded test machine
      primaryGuest: new FakeGuest([new MemoryBackend(count * big + (1 << 20))]),
      secondaryGuest: new FakeGuest([new MemoryBackend(count * big + (1 << 20))]),
      beforeFrame: (frame) => {
        if (frame.kind === "disk-blocks") expect(frame.data.length).to.be.at.most(MAX_FRAME_BYTES);
      },
    });
    const writes = Array.from({ length: count }, (_, i) => pair.primaryGuest.write((i * big) / 512, new Uint8Array(big).fill(i + 1), 0));
    expect(await Promise.all(writes.map((w) => w.completion))).to.deep.equal(writes.map(() => "ok"));
    expect(pair.primary.state).to.equal("protected");
    expect(pair.primary.metrics.syncs).to.be.at.least(2);
    const [a, b] = [pair.primaryGuest, pair.secondaryGuest].map((g) => (g.disks[0]!.backend as MemoryBackend).bytes);
    await until(() => Buffer.compare(a!, b!) === 0, "the secondary's disk to equal the primary's");
    await pair.primary.close();
  });

  it("input the secondary refuses does not make it take over: it holds the replica (standby) and can be promoted", async () => {
    let poisoned = false;
    const pair = await startPair({
      beforeFrame: (frame) => {
        // A healthy primary with a bug: a state delta for a part the replica does not have.
        if (!poisoned && frame.kind === "state-changes" && frame.seq === 1) {
          poisoned = true;
          frame.changes.push({ index: frame.partCount + 5, encoding: "runs", length: 4, bytes: Uint8Array.of(0, 4, 1, 2, 3, 4) });
          frame.partCount += 6;
        }
      },
    });
    pair.primaryGuest.touch(5, 1);
    const write = pair.primaryGuest.write(48, sector(1, 0x77));
    expect(await write.completion).to.equal("ok"); // continue: released once the primary lost its secondary
    await until(() => pair.secondary.state === "standby", "the secondary to stand by");
    expect(pair.log.join("\n")).to.match(/NOT taking over/);
    expect(pair.secondaryGuest.startedWith).to.equal(undefined);
    // The replica is still the consistent state of the last commit: promotion works.
    await pair.secondary.promote("operator decided");
    expect(pair.secondary.state).to.equal("active");
    expect(pair.secondaryGuest.startedWith).to.not.equal(undefined);
  });

  it("a failing primary disk hands the guest over: the failed write never completes on the primary, the secondary runs the guest", async () => {
    const failing = new FailingBackend(1 << 20);
    const pair = await startPair({ primaryGuest: new FakeGuest([failing]) });
    expect(await pair.primaryGuest.write(8, sector(1, 1)).completion).to.equal("ok");
    failing.failWrites = true;
    const doomed = pair.primaryGuest.write(16, sector(1, 2));
    await until(() => pair.primary.state === "fenced", "the primary to hand over and fence itself");
    expect(pair.secondary.state).to.equal("active");
    expect(pair.secondaryGuest.startedWith).to.not.equal(undefined);
    expect(pair.primaryGuest.paused).to.equal(true);
    await settle();
    expect(doomed.completed(), "the guest must never see the error").to.equal(false);
    // What the primary had acknowledged is on the secondary's disk.
    expect((pair.secondaryGuest.disks[0]!.backend as MemoryBackend).bytes[8 * 512]).to.equal(1);
  });

  it("a failing primary disk with no secondary to hand over to fails the request, as before", async () => {
    const failing = new FailingBackend(1 << 20);
    const pair = await startPair({ primaryGuest: new FakeGuest([failing]) });
    pair.link.cut("the secondary is gone");
    await until(() => pair.primary.state === "unprotected", "the primary to notice");
    failing.failWrites = true;
    expect(await pair.primaryGuest.write(16, sector(1, 2)).completion).to.equal("error");
  });

  it("hands over on request (a migration's switch-over): last sync, then the secondary resumes and the primary is fenced", async () => {
    const pair = await startPair();
    pair.primaryGuest.touch(4, 9);
    const released: string[] = [];
    pair.primary.outputs.onRelease("console", (bytes) => released.push(new TextDecoder().decode(bytes)));
    // Printed just before: its sync's ack lets it out, and no later sync tells the secondary so.
    pair.primaryGuest.print("before the switch\n");
    const { pausedAtMs, resumedAtMs } = await pair.primary.handOver("planned switch-over");
    expect(released, "the old primary let it out").to.deep.equal(["before the switch\n"]);
    expect(pair.primary.state).to.equal("fenced");
    expect(pair.secondary.state).to.equal("active");
    expect(resumedAtMs).to.be.a("number").and.at.least(pausedAtMs);
    // The replica resumed from the state as of the pause: the last touch is in its RAM.
    expect(Buffer.compare(pair.secondaryGuest.ram(), pair.primaryGuest.ram())).to.equal(0);
    // A primary that hands over let out all it held: the new one repeats none of it.
    expect(pair.secondary.takeCarriedOutput()).to.deep.equal([]);
  });

  it("verify finds a sector corrupted in the secondary's image and a page corrupted in its RAM, and repairs both", async () => {
    const pair = await startPair();
    expect(await pair.primaryGuest.write(100, sector(8, 0x33)).completion).to.equal("ok");
    const clean = await pair.primary.verify({ rangeBytes: 256 << 10, chunkBytes: 64 << 10 });
    expect(clean.disks[0]!.differing).to.deep.equal([]);
    expect(clean.ram!.differing).to.deep.equal([]);
    // Corruption behind the engines' backs: one sector of the replica's disk, one byte of its RAM.
    const replicaDisk = (pair.secondaryGuest.disks[0]!.backend as MemoryBackend).bytes;
    await until(() => replicaDisk[100 * 512] === 0x33, "the write on the replica's disk");
    replicaDisk[300 * 512 + 7] = replicaDisk[300 * 512 + 7]! ^ 0xff; // sector 300: in the chunk at 128 KiB
    const replicaRam = pair.secondaryGuest.ram();
    replicaRam[20 * 4096 + 5] = replicaRam[20 * 4096 + 5]! ^ 0xff; // page 20: in the chunk at 64 KiB
    const found = await pair.primary.verify({ rangeBytes: 256 << 10, chunkBytes: 64 << 10 });
    expect(found.disks[0]!.differing).to.deep.equal([{ offset: 128 << 10, length: 64 << 10 }]);
    expect(found.ram!.differing).to.deep.equal([{ offset: 64 << 10, length: 64 << 10 }]);
    const repaired = await pair.primary.verify({ rangeBytes: 256 << 10, chunkBytes: 64 << 10, repair: true });
    expect(repaired.disks[0]!.repaired).to.deep.equal([{ offset: 128 << 10, length: 64 << 10 }]);
    expect(repaired.ram!.repaired).to.deep.equal([{ offset: 64 << 10, length: 64 << 10 }]);
    expect(repaired.disks[0]!.differing).to.deep.equal([]);
    expect(repaired.ram!.differing).to.deep.equal([]);
    const primaryDisk = (pair.primaryGuest.disks[0]!.backend as MemoryBackend).bytes;
    expect(Buffer.compare(replicaDisk, primaryDisk)).to.equal(0);
    expect(Buffer.compare(pair.secondaryGuest.ram(), pair.primaryGuest.ram())).to.equal(0);
    await pair.primary.close();
  });

  for (const stopAndCopy of [false, true]) {
    it(`migrates a protected guest to a new node${stopAndCopy ? " (stop-and-copy baseline)" : ""}: the old secondary stands by, the target resumes, the source is fenced`, async () => {
      const pair = await startPair();
      const oldSecondary = pair.secondary;
      expect(await pair.primaryGuest.write(40, sector(2, 0x66)).completion).to.equal("ok");
      const targetGuest = new FakeGuest();
      const { channel: toTarget, accepted: atTarget } = await linkedChannels();
      const target = new SecondaryEngine(targetGuest, { peerTimeoutMs: 400 });
      void target.attach(atTarget);
      const report = await pair.primary.migrate(toTarget, { stopAndCopy });
      expect(pair.primary.state).to.equal("fenced");
      expect(target.state).to.equal("active");
      await until(() => oldSecondary.state === "standby", "the old secondary to stand by");
      expect(targetGuest.startedWith).to.not.equal(undefined);
      expect((targetGuest.disks[0]!.backend as MemoryBackend).bytes[40 * 512]).to.equal(0x66);
      expect(report.downtimeMs).to.be.a("number").and.at.least(0);
      expect(report.bytes).to.be.greaterThan(0);
      if (stopAndCopy) expect(report.downtimeMs!).to.be.at.least(report.copyMs - 1);
    });
  }

  it("a primary that leaves while the secondary hashes its disks does not break the secondary", async () => {
    const secondaryGuest = new FakeGuest([new MemoryBackend(64 << 20)]);
    const secondary = new SecondaryEngine(secondaryGuest, { peerTimeoutMs: 400 });
    const { link, channel: primaryChannel, accepted: secondaryChannel } = await linkedChannels();
    const attached = secondary.attach(secondaryChannel);
    link.cut("the primary died right after the handshake");
    await attached; // resolves, never rejects
    void primaryChannel;
    expect(secondary.state).to.equal("waiting");
    // The next primary is served.
    const primaryGuest = new FakeGuest([new MemoryBackend(64 << 20)]);
    const primary = new PrimaryEngine(primaryGuest, { mode: "logging-replay", peerTimeoutMs: 2000 });
    const { channel: a, accepted: b } = await linkedChannels();
    void secondary.attach(b);
    await primary.protect(a);
    expect(primary.state).to.equal("protected");
    expect(secondary.state).to.equal("replicating");
    await primary.close();
  });
});
