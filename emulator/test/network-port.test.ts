// The network port without a guest: a fake NIC stands in for v86's virtio-net, so every
// path through transmit and receive (sizes, readiness, ids, listeners, state) is pinned in
// milliseconds. network-guest.test.ts runs the same port against Linux's driver.
import { expect } from "chai";
import { Machine } from "../machine.ts";
import { defaultGuest } from "../node/images.ts";
import { ConfigError, MachineStateError, SnapshotError } from "../errors.ts";
import { resolveConfig, type JsonValue } from "../config.ts";
import { DEFAULT_MAC, MAX_FRAME_BYTES, formatMac, parseMac } from "../net/frame.ts";
import { NetworkPort, type NicHost } from "../net/port.ts";
import type { NicReceiveState, V86Nic } from "../v86-internals.ts";

class FakeNic implements V86Nic {
  mac: Uint8Array = new Uint8Array(6);
  state: NicReceiveState = "ready";
  delivered: Uint8Array[] = [];
  #transmit: ((frame: Uint8Array) => void) | undefined;

  setMac(mac: Uint8Array): void {
    this.mac = mac.slice();
  }
  receiveState(): NicReceiveState {
    return this.state;
  }
  deliver(frame: Uint8Array): void {
    this.delivered.push(frame.slice());
  }
  onTransmit(listener: (frame: Uint8Array) => void): () => void {
    this.#transmit = listener;
    return () => (this.#transmit = undefined);
  }
  /** What v86 does when the guest sends: a view into a buffer it may reuse. */
  guestSends(bytes: Uint8Array): void {
    this.#transmit?.(bytes);
  }
  get attached(): boolean {
    return this.#transmit !== undefined;
  }
}

function setup(): { nic: FakeNic; host: NicHost & { atInstructionBoundary: boolean }; port: NetworkPort; log: string[] } {
  const nic = new FakeNic();
  const host = { nic, atInstructionBoundary: true };
  const log: string[] = [];
  const port = new NetworkPort({ mac: parseMac("52:54:00:aa:bb:cc") as Uint8Array, log: (line) => log.push(line) });
  port.attach(host);
  return { nic, host, port, log };
}

const frameOf = (length: number, fill = 0x5a) => new Uint8Array(length).fill(fill);

describe("network port (fake NIC)", () => {
  it("sets the configured MAC on the NIC when attached, and shows the NIC's MAC from then on", () => {
    const { nic, port } = setup();
    expect(formatMac(nic.mac)).to.equal("52:54:00:aa:bb:cc");
    expect(port.mac).to.equal("52:54:00:aa:bb:cc");
    nic.mac = parseMac("52:54:00:aa:bb:dd") as Uint8Array; // a restore, or the driver, changed it
    expect(port.mac).to.equal("52:54:00:aa:bb:dd");
    expect(() => port.attach({ nic: new FakeNic(), atInstructionBoundary: true })).to.throw(/already attached/);
  });

  it("is usable before the emulator exists: the configured MAC, listeners kept for later, frames not-ready", () => {
    const port = new NetworkPort({ mac: parseMac("52:54:00:aa:bb:cc") as Uint8Array });
    expect(port.mac).to.equal("52:54:00:aa:bb:cc");
    const seen: Uint8Array[] = [];
    port.onTransmit((frame) => seen.push(frame));
    expect(port.receive(frameOf(60), 0)).to.equal("not-ready");
    expect(port.metrics.receiveDropped["not-ready"]).to.equal(1);
    const nic = new FakeNic();
    port.attach({ nic, atInstructionBoundary: true });
    nic.guestSends(frameOf(60));
    expect(seen).to.have.length(1);
    expect(port.receive(frameOf(60), 1)).to.equal("taken");
  });

  it("passes each frame the guest sends to every listener as its own copy, and counts it", () => {
    const { nic, port } = setup();
    const first: Uint8Array[] = [];
    const second: Uint8Array[] = [];
    port.onTransmit((frame) => first.push(frame));
    const stop = port.onTransmit((frame) => second.push(frame));
    const buffer = frameOf(100, 1);
    nic.guestSends(buffer.subarray(0, 60));
    buffer.fill(9); // v86 reuses its buffer: the copies must not change
    first[0]![0] = 77; // nor does one listener's change reach another
    expect(Array.from(second[0]!)).to.deep.equal(Array.from(frameOf(60, 1)));
    expect(first[0]!.length).to.equal(60);
    stop();
    nic.guestSends(frameOf(MAX_FRAME_BYTES));
    expect(first).to.have.length(2);
    expect(second).to.have.length(1);
    expect(port.metrics.snapshot()).to.include({ transmittedFrames: 2, transmittedBytes: 60 + MAX_FRAME_BYTES });
  });

  it("drops and counts runt and oversized frames from the guest; listeners never see them", () => {
    const { nic, port } = setup();
    const seen: Uint8Array[] = [];
    port.onTransmit((frame) => seen.push(frame));
    nic.guestSends(frameOf(13));
    nic.guestSends(new Uint8Array(0));
    nic.guestSends(frameOf(MAX_FRAME_BYTES + 1));
    nic.guestSends(frameOf(14)); // a bare header is a frame
    expect(seen.map((f) => f.length)).to.deep.equal([14]);
    expect(port.metrics.transmitDropped).to.deep.equal({ runt: 2, oversized: 1 });
    expect(port.metrics.transmittedFrames).to.equal(1);
  });

  it("keeps the guest going when a listener throws: counted, logged at a bounded rate, the others still called", () => {
    const { nic, port, log } = setup();
    let calls = 0;
    port.onTransmit(() => {
      throw new Error("listener bug");
    });
    port.onTransmit(() => calls++);
    for (let i = 0; i < 20; i++) expect(() => nic.guestSends(frameOf(60))).to.not.throw();
    expect(calls).to.equal(20);
    expect(port.metrics.listenerErrors).to.equal(20);
    expect(log.length).to.be.within(1, 5);
    expect(log[0]).to.match(/virtio-net: a transmit listener threw: listener bug/);
  });

  it("delivers a frame when the driver has a buffer, else says why not, and counts both", () => {
    const { nic, port } = setup();
    expect(port.receive(frameOf(60), 1)).to.equal("taken");
    nic.state = "no-buffer";
    expect(port.receive(frameOf(60), 2)).to.equal("no-buffer");
    nic.state = "not-ready";
    expect(port.receive(frameOf(60), 3)).to.equal("not-ready");
    nic.state = "ready";
    expect(port.receive(frameOf(13), 4)).to.equal("runt");
    expect(port.receive(frameOf(MAX_FRAME_BYTES + 1), 5)).to.equal("oversized");
    expect(port.receive(frameOf(MAX_FRAME_BYTES), 6)).to.equal("taken");
    expect(nic.delivered.map((f) => f.length)).to.deep.equal([60, MAX_FRAME_BYTES]);
    expect(port.metrics.snapshot()).to.deep.include({
      receivedFrames: 2,
      receivedBytes: 60 + MAX_FRAME_BYTES,
      receiveDropped: { runt: 1, oversized: 1, "no-buffer": 1, "not-ready": 1 },
    });
  });

  it("moves the ingress watermark with every frame it is handed, dropped ones too, and only upwards", () => {
    const { nic, port } = setup();
    expect(port.lastIngressId).to.equal(null);
    port.receive(frameOf(60), 0);
    expect(port.lastIngressId).to.equal(0);
    nic.state = "no-buffer";
    port.receive(frameOf(60), 7); // gaps are the gateway's business
    port.receive(frameOf(3), 8);
    expect(port.lastIngressId).to.equal(8);
    expect(() => port.receive(frameOf(60), 8)).to.throw(RangeError, /ingress id 8 does not follow the last one, 8/);
    expect(() => port.receive(frameOf(60), 2)).to.throw(RangeError, /does not follow/);
    for (const bad of [-1, 1.5, NaN, Number.MAX_SAFE_INTEGER + 1])
      expect(() => port.receive(frameOf(60), bad)).to.throw(RangeError, /non-negative safe integer/);
    expect(() => port.receive([1, 2, 3] as unknown as Uint8Array, 20)).to.throw(TypeError, /Uint8Array/);
    expect(port.lastIngressId).to.equal(8);
  });

  it("refuses a receive from inside a guest instruction (a transmit listener) and leaves the watermark alone", () => {
    const { host, nic, port } = setup();
    host.atInstructionBoundary = false;
    expect(() => port.receive(frameOf(60), 1)).to.throw(MachineStateError, /inside a guest instruction/);
    expect(port.lastIngressId).to.equal(null);
    expect(nic.delivered).to.have.length(0);
  });

  it("saves and restores the watermark, and refuses a damaged state", () => {
    const { port } = setup();
    expect(port.saveState()).to.deep.equal({ lastIngressId: null });
    port.receive(frameOf(60), 41);
    const saved = JSON.parse(JSON.stringify(port.saveState())) as JsonValue;
    const other = setup().port;
    other.restoreState(saved);
    expect(other.lastIngressId).to.equal(41);
    other.restoreState({ lastIngressId: null });
    expect(other.lastIngressId).to.equal(null);
    for (const damaged of [null, [], 5, {}, { lastIngressId: -1 }, { lastIngressId: 1.5 }, { lastIngressId: "3" }] as JsonValue[]) {
      expect(() => other.restoreState(damaged), JSON.stringify(damaged)).to.throw(SnapshotError, /state of virtio-net is damaged/);
    }
  });

  it("lets go of the NIC and its listeners when closed, keeps the last MAC and metrics, and refuses frames", async () => {
    const { nic, port } = setup();
    port.onTransmit(() => {});
    port.receive(frameOf(60), 1);
    nic.mac = parseMac("52:54:00:aa:bb:dd") as Uint8Array;
    expect(nic.attached).to.equal(true);
    await port.close();
    expect(nic.attached).to.equal(false);
    expect(port.mac).to.equal("52:54:00:aa:bb:dd");
    expect(port.metrics.receivedFrames).to.equal(1);
    expect(() => port.receive(frameOf(60), 2)).to.throw(MachineStateError, /destroyed/);
    expect(() => port.attach({ nic, atInstructionBoundary: true })).to.throw(MachineStateError, /closed/);
  });
});

describe("network config", () => {
  it("defaults to a locally administered unicast MAC", () => {
    expect(resolveConfig(defaultGuest()).network).to.deep.equal({ mac: DEFAULT_MAC });
    const bytes = parseMac(DEFAULT_MAC) as Uint8Array;
    expect(bytes[0]! & 0b11, "locally administered, unicast").to.equal(0b10);
    expect(resolveConfig({ ...defaultGuest(), network: { mac: "02:00:00:00:00:01" } }).network.mac).to.equal("02:00:00:00:00:01");
    expect(resolveConfig({ ...defaultGuest(), network: {} }).network.mac).to.equal(DEFAULT_MAC);
  });

  it("refuses a MAC a NIC cannot have, and a network option that is not an object", () => {
    const mac = (value: unknown) => () => resolveConfig({ ...defaultGuest(), network: { mac: value as string } });
    expect(mac("52:54:00:12:34")).to.throw(ConfigError, /config\.network\.mac: expected six hex octets/);
    expect(mac("52-54-00-12-34-56")).to.throw(ConfigError, /six hex octets/);
    expect(mac("01:00:5e:00:00:01")).to.throw(ConfigError, /multicast/);
    expect(mac("00:00:00:00:00:00")).to.throw(ConfigError, /all-zero/);
    expect(mac(42)).to.throw(ConfigError, /expected a string, got number 42/);
    expect(() => resolveConfig({ ...defaultGuest(), network: "52:54:00:12:34:56" as unknown as object })).to.throw(
      ConfigError,
      /config\.network: expected an object/,
    );
  });

  it("refuses a device of ours that takes the NIC's state key", async () => {
    const clash = () => ({ stateKey: "virtio-net", saveState: () => null, restoreState: () => {} });
    const error = await Machine.createBlank({ ...defaultGuest(), devices: [clash] }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).to.be.instanceOf(ConfigError);
    expect((error as Error).message).to.match(/share a stateKey \(virtio-net is the NIC's\)/);
  });

  it("has the port before boot, and gives a blank machine the configured MAC and a NIC that drops frames until a driver is up", async () => {
    expect(new Machine({ ...defaultGuest(), network: { mac: "52:54:00:00:00:08" } }).network.mac).to.equal("52:54:00:00:00:08");
    const blank = await Machine.createBlank({ ...defaultGuest(), network: { mac: "52:54:00:00:00:07" } });
    try {
      expect(blank.network.mac).to.equal("52:54:00:00:00:07");
      // The rings are not set up: reading them would read RAM at address 0.
      expect(blank.network.receive(frameOf(60), 0)).to.equal("not-ready");
      expect(blank.network.metrics.receiveDropped["not-ready"]).to.equal(1);
    } finally {
      await blank.destroy();
    }
    expect(blank.network.mac).to.equal("52:54:00:00:00:07");
    expect(() => blank.network.receive(frameOf(60), 1)).to.throw(MachineStateError, /destroyed/);
  });
});
