// The gateway core's rules with fake nodes and a fake stack: epoch gating and
// replacement, ingress ids and the log, replay from the right id after a takeover,
// logging while detached, the committed watermark, bounds, and bad frames.
import { expect } from "chai";
import { GatewayCore, type GatewayEvent, type NodeSink } from "../network/gateway-core.ts";

const FIRST = 1000;
const MAX_FRAME = 1514;

class FakeNode implements NodeSink {
  writable = true;
  readonly delivered: Array<{ id: number; tag: number }> = [];
  supersededBy: number | undefined;

  deliver(frame: Uint8Array, id: number): void {
    this.delivered.push({ id, tag: frame[14]! });
  }

  superseded(epoch: number): void {
    this.supersededBy = epoch;
  }

  get ids(): number[] {
    return this.delivered.map((d) => d.id);
  }
}

class FakeStack {
  up = true;
  readonly sent: number[] = [];
  send(frame: Uint8Array): boolean {
    if (!this.up) return false;
    this.sent.push(frame[14]!);
    return true;
  }
}

/** A frame of `length` bytes whose first payload byte is `tag` (to tell frames apart). */
function frame(tag: number, length = 60): Uint8Array {
  const bytes = new Uint8Array(length);
  if (length > 14) bytes[14] = tag;
  return bytes;
}

function setup(limits: { maxFrames?: number; maxBytes?: number } = {}) {
  const stack = new FakeStack();
  const core = new GatewayCore(stack, {
    maxFrames: limits.maxFrames ?? 100,
    maxBytes: limits.maxBytes ?? 1 << 20,
    maxFrameBytes: MAX_FRAME,
    firstIngressId: FIRST,
  });
  const events: GatewayEvent[] = [];
  core.onEvent((event) => events.push(event));
  const attach = (node: FakeNode, epoch: number, last: number) => {
    const result = core.attach(node, epoch, last);
    if (result.accepted) core.resume(node);
    return result;
  };
  return { stack, core, events, attach };
}

describe("network gateway core", function () {
  describe("epochs", function () {
    it("refuses a lower epoch than the highest attached, even after that node left, and says which epoch it serves", function () {
      const { core, attach } = setup();
      const a = new FakeNode();
      expect(attach(a, 3, 0).accepted).to.equal(true);
      const stale = attach(new FakeNode(), 2, 0);
      expect(stale).to.deep.include({ accepted: false, reason: "stale-epoch", currentEpoch: 3 });
      core.detach(a, "link lost");
      expect(attach(new FakeNode(), 2, 0).accepted, "still stale with nobody attached").to.equal(false);
      expect(core.counters().nodes.refused).to.equal(2);
      expect(a.supersededBy, "a refused node does not displace anyone").to.equal(undefined);
    });

    it("lets an equal or higher epoch replace the attached node, which is told and can no longer send", function () {
      const { core, stack, attach } = setup();
      const a = new FakeNode();
      const b = new FakeNode();
      const c = new FakeNode();
      attach(a, 1, 0);
      core.egress(a, frame(1));
      expect(attach(b, 1, 0)).to.deep.include({ accepted: true, replacedEpoch: 1 });
      expect(a.supersededBy).to.equal(1);
      expect(attach(c, 2, 0)).to.deep.include({ accepted: true, replacedEpoch: 1 });
      expect(b.supersededBy).to.equal(2);
      core.egress(a, frame(2));
      core.egress(b, frame(3));
      core.egress(c, frame(4));
      expect(stack.sent).to.deep.equal([1, 4]);
      expect(core.counters().egress.dropped.staleEpoch).to.equal(2);
      expect(core.counters().nodes).to.deep.include({ attached: 3, replaced: 2, current: { epoch: 2, delivered: FIRST - 1 } });
    });
  });

  describe("ingress", function () {
    it("gives frames increasing ids and delivers them in order to the attached node only", function () {
      const { core, attach } = setup();
      const a = new FakeNode();
      attach(a, 1, 0);
      for (let i = 0; i < 5; i++) core.ingress(frame(i));
      expect(a.ids).to.deep.equal([FIRST, FIRST + 1, FIRST + 2, FIRST + 3, FIRST + 4]);
      expect(a.delivered.map((d) => d.tag)).to.deep.equal([0, 1, 2, 3, 4]);
      const b = new FakeNode();
      attach(b, 2, FIRST + 4);
      core.ingress(frame(5));
      expect(a.ids).to.have.length(5);
      expect(b.ids).to.deep.equal([FIRST + 5]);
    });

    it("logs frames while no node is attached and gives them, in order, to the next node before live ones", function () {
      const { core, attach } = setup();
      core.ingress(frame(7)); // a SYN during a takeover, say
      core.ingress(frame(8));
      expect(core.counters().ingress.heldWhileDetached).to.equal(2);
      const a = new FakeNode();
      const result = attach(a, 1, 0);
      expect(result).to.deep.include({ accepted: true, resumeFrom: FIRST, replay: 2, missing: 0 });
      core.ingress(frame(9));
      expect(a.delivered.map((d) => d.tag)).to.deep.equal([7, 8, 9]);
      expect(core.counters().ingress.replayed).to.equal(2);
    });

    it("after a takeover gives the new primary exactly the frames after its replica's last id", function () {
      const { core, attach } = setup();
      const primary = new FakeNode();
      attach(primary, 1, 0);
      for (let i = 0; i < 10; i++) core.ingress(frame(i));
      expect(core.committed(primary, FIRST + 3)).to.deep.equal({ ok: true }); // synced through frame 3
      core.detach(primary, "killed");
      core.ingress(frame(10)); // arrives during the takeover
      // The secondary's copy was synced after frame 6 reached the guest, but the commit never arrived.
      const secondary = new FakeNode();
      const result = attach(secondary, 2, FIRST + 6);
      expect(result).to.deep.include({ accepted: true, resumeFrom: FIRST + 7, replay: 4, missing: 0 });
      core.ingress(frame(11));
      expect(secondary.delivered.map((d) => d.tag)).to.deep.equal([7, 8, 9, 10, 11]);
      expect(secondary.ids[0]).to.equal(FIRST + 7);
      expect(core.counters().ingress.replayed).to.equal(4);
    });

    it("waits while the node's link is full and resumes in order when it drains", function () {
      const { core, attach } = setup();
      const a = new FakeNode();
      attach(a, 1, 0);
      core.ingress(frame(0));
      a.writable = false;
      core.ingress(frame(1));
      core.ingress(frame(2));
      expect(a.ids).to.deep.equal([FIRST]);
      a.writable = true;
      core.resume(a);
      expect(a.delivered.map((d) => d.tag)).to.deep.equal([0, 1, 2]);
    });
  });

  describe("the committed watermark", function () {
    it("trims the log through the committed id; lower or repeated ids change nothing", function () {
      const { core, attach } = setup();
      const a = new FakeNode();
      attach(a, 1, 0);
      for (let i = 0; i < 6; i++) core.ingress(frame(i, 100));
      expect(core.counters().log).to.deep.include({ frames: 6, bytes: 600, firstId: FIRST, lastId: FIRST + 5 });
      core.committed(a, FIRST + 3);
      expect(core.counters().log).to.deep.include({ frames: 2, bytes: 200, firstId: FIRST + 4, committed: FIRST + 3 });
      core.committed(a, FIRST + 1);
      expect(core.counters().log.frames).to.equal(2);
    });

    it("refuses a commit of a frame the node was never given, and ignores a superseded node's", function () {
      const { core, attach } = setup();
      const a = new FakeNode();
      attach(a, 1, 0);
      core.ingress(frame(0));
      const result = core.committed(a, FIRST + 1);
      expect(result.ok).to.equal(false);
      expect(result.ok === false && result.message).to.match(/last frame this node was given is 1000/);
      const b = new FakeNode();
      attach(b, 2, FIRST - 1);
      expect(core.committed(a, FIRST)).to.deep.equal({ ok: true });
      expect(core.counters().log.frames, "a's word no longer counts").to.equal(1);
    });

    it("counts frames a node asks for that were trimmed as committed by another", function () {
      const { core, attach } = setup();
      const a = new FakeNode();
      attach(a, 1, 0);
      for (let i = 0; i < 5; i++) core.ingress(frame(i));
      core.committed(a, FIRST + 3);
      const b = new FakeNode();
      // A replica older than the committed watermark: FIRST+2 and FIRST+3 are gone.
      expect(attach(b, 2, FIRST + 1)).to.deep.include({ resumeFrom: FIRST + 4, replay: 1, missing: 2 });
      expect(b.delivered.map((d) => d.tag)).to.deep.equal([4]);
    });

    it("gives everything logged to a node whose id this gateway never gave out, and reports it", function () {
      const { core, events, attach } = setup();
      core.ingress(frame(0));
      const a = new FakeNode();
      expect(attach(a, 1, FIRST + 500)).to.deep.include({ resumeFrom: FIRST, replay: 1 });
      expect(events.some((e) => e.type === "unknown-ingress-id")).to.equal(true);
      // An id from before this gateway's first (an earlier gateway's) is simply older: no event, no gap.
      const { core: core2, events: events2, attach: attach2 } = setup();
      core2.ingress(frame(1));
      expect(attach2(new FakeNode(), 1, 17)).to.deep.include({ resumeFrom: FIRST, replay: 1, missing: 0 });
      expect(events2.some((e) => e.type === "unknown-ingress-id")).to.equal(false);
    });
  });

  describe("bounds and bad frames", function () {
    it("drops the newest frames when the log is full (no node: noNode; a node that does not commit: logFull), keeping the oldest", function () {
      const { core, attach } = setup({ maxFrames: 3 });
      for (let i = 0; i < 5; i++) core.ingress(frame(i));
      expect(core.counters().ingress.dropped).to.deep.include({ noNode: 2, logFull: 0 });
      const a = new FakeNode();
      attach(a, 1, 0);
      expect(
        a.delivered.map((d) => d.tag),
        "the oldest frames were kept",
      ).to.deep.equal([0, 1, 2]);
      core.ingress(frame(5));
      expect(core.counters().ingress.dropped.logFull).to.equal(1);
      core.committed(a, FIRST + 2);
      core.ingress(frame(6));
      expect(a.delivered.map((d) => d.tag)).to.deep.equal([0, 1, 2, 6]);
      expect(a.ids.at(-1), "ids stay contiguous: a dropped frame gets none").to.equal(FIRST + 3);
    });

    it("bounds the log in bytes too", function () {
      const { core } = setup({ maxBytes: 1000 });
      for (let i = 0; i < 5; i++) core.ingress(frame(i, 300));
      expect(core.counters().log).to.deep.include({ frames: 3, bytes: 900 });
      expect(core.counters().ingress.dropped.noNode).to.equal(2);
    });

    it("drops and counts oversized and malformed frames both ways", function () {
      const { core, stack, attach } = setup();
      const a = new FakeNode();
      attach(a, 1, 0);
      core.ingress(frame(1, MAX_FRAME + 1));
      core.ingress(frame(2, 13));
      core.ingress(frame(3, MAX_FRAME));
      core.egress(a, frame(4, MAX_FRAME + 1));
      core.egress(a, new Uint8Array(0));
      core.egress(a, frame(5, 15));
      expect(a.delivered.map((d) => d.tag)).to.deep.equal([3]);
      expect(stack.sent).to.deep.equal([5]);
      const counters = core.counters();
      expect(counters.ingress.dropped).to.deep.include({ oversized: 1, malformed: 1 });
      expect(counters.egress.dropped).to.deep.include({ oversized: 1, malformed: 1 });
      expect(counters.ingress).to.deep.include({ frames: 1, bytes: MAX_FRAME });
      expect(counters.egress).to.deep.include({ frames: 1, bytes: 15 });
    });

    it("counts egress frames the stack could not take", function () {
      const { core, stack, attach } = setup();
      const a = new FakeNode();
      attach(a, 1, 0);
      stack.up = false;
      core.egress(a, frame(1));
      expect(core.counters().egress.dropped.stackDown).to.equal(1);
      expect(core.counters().egress.frames).to.equal(0);
    });
  });
});
