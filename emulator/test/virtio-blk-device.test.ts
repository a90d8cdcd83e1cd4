// The virtio PCI transport and the block device without a guest: a test driver
// programs them through BAR0 and lays out rings in a plain RAM.
import { expect } from "chai";
import { MemoryBackend } from "../block/memory-backend.ts";
import { BlockHook, type BlockIoEvent } from "../block/hook.ts";
import { RateLimitedLog } from "../rate-limited-log.ts";
import type { PciFunctionSpec } from "../v86-internals.ts";
import { DescriptorFlag, DeviceStatus, IsrBit } from "../virtio/constants.ts";
import { VirtioPciTransport, type TransportState } from "../virtio/pci-transport.ts";
import { checkDiskState } from "../virtio-blk/disk-state.ts";
import { VirtioBlkDevice } from "../virtio-blk/device.ts";
import { parseRequest, type RequestErrorKind } from "../virtio-blk/request.ts";
import { BlkStatus, RequestType } from "../virtio-blk/spec.ts";
import type { BlockBackend } from "../block/backend.ts";
import { EVENT_IDX, INDIRECT, TestVirtioDriver, VERSION_1, plainRam } from "./helpers/virtio-test-driver.ts";

const RAM_SIZE = 4 << 20;
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

interface Rig {
  driver: TestVirtioDriver;
  device: VirtioBlkDevice;
  transport: VirtioPciTransport;
  backend: MemoryBackend;
  ram: ReturnType<typeof plainRam>;
  irq: { level: boolean; raised: number };
  spec: PciFunctionSpec;
  warnings: string[];
}

function rig(options: { backend?: BlockBackend; hook?: BlockHook; ram?: ReturnType<typeof plainRam> } = {}): Rig {
  const ram = options.ram ?? plainRam(RAM_SIZE);
  const backend = (options.backend ?? new MemoryBackend(1 << 20)) as MemoryBackend;
  const warnings: string[] = [];
  const log = new RateLimitedLog("test", (line) => warnings.push(line), 1000);
  const irq = { level: false, raised: 0 };
  let spec: PciFunctionSpec | undefined;
  const device = new VirtioBlkDevice({ id: "vdt", backend, serial: "serial-0123456789abcdefXYZ", hook: options.hook, log });
  const transport = new VirtioPciTransport(
    device,
    ram,
    {
      attachPciFunction(s) {
        spec = s;
        return { raise: () => ((irq.level = true), irq.raised++), lower: () => void (irq.level = false) };
      },
    },
    { name: "test", slot: 0x0d, log },
  );
  const driver = new TestVirtioDriver(transport, ram, { base: 1 << 20, size: 1 << 20 });
  return { driver, device, transport, backend, ram, irq, spec: spec!, warnings };
}

function status(r: Rig, gpa: number): number {
  return r.ram.bytes[gpa]!;
}

describe("virtio PCI transport", () => {
  it("presents a modern virtio-blk function with its capabilities in BAR0", () => {
    const { spec } = rig();
    const view = new DataView(spec.configSpace.buffer);
    expect(view.getUint16(0, true)).to.equal(0x1af4);
    expect(view.getUint16(2, true)).to.equal(0x1042);
    expect(spec.configSpace[8]).to.equal(1);
    expect(view.getUint16(0x2e, true)).to.be.at.least(0x40);
    const caps: number[][] = [];
    for (let at = spec.configSpace[0x34]!; at !== 0; at = spec.configSpace[at + 1]!) {
      caps.push([spec.configSpace[at]!, spec.configSpace[at + 3]!, spec.configSpace[at + 4]!, view.getUint32(at + 8, true)]);
    }
    expect(caps).to.deep.equal([
      [9, 1, 0, 0x00],
      [9, 2, 0, 0x60],
      [9, 3, 0, 0x40],
      [9, 4, 0, 0x80],
    ]);
    expect(spec.ioBars[0]!.size).to.equal(256);
  });

  it("refuses features without VERSION_1 or beyond what it offers", () => {
    const r = rig();
    expect(r.driver.setup(INDIRECT)).to.equal(false);
    expect(r.driver.setup(VERSION_1 | (1n << 40n))).to.equal(false);
    expect(r.driver.setup(VERSION_1)).to.equal(true);
    expect(r.driver.status & DeviceStatus.DRIVER_OK).to.not.equal(0);
  });

  it("reports capacity, seg_max and blk_size in the device config", () => {
    const r = rig();
    expect(r.transport.read(0x80, 4)).to.equal(2048);
    expect(r.transport.read(0x84, 4)).to.equal(0);
    expect(r.transport.read(0x8c, 4)).to.equal(254);
    expect(r.transport.read(0x94, 4)).to.equal(512);
  });

  it("contains an exception from the device: needs reset, counted, nothing thrown into v86", () => {
    const r = rig();
    r.driver.setup();
    r.device.processQueue = () => {
      throw new Error("device bug");
    };
    expect(() => r.driver.notify()).to.not.throw();
    expect(r.transport.internalErrors).to.equal(1);
    expect(r.driver.status & DeviceStatus.DEVICE_NEEDS_RESET).to.not.equal(0);
    expect(r.warnings.join("\n")).to.match(/internal error during write of BAR0\+96: Error: device bug/);
  });

  it("flags a queue laid outside RAM as needing reset", () => {
    const r = rig();
    r.driver.setup();
    r.driver.reset();
    r.transport.write(0x14, 1, DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER);
    r.transport.write(0x0c, 4, 0);
    r.transport.write(0x08, 4, 1);
    r.transport.write(0x0c, 4, 1);
    r.transport.write(0x14, 1, DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK);
    r.transport.write(0x20, 4, RAM_SIZE - 16);
    r.transport.write(0x1c, 2, 1);
    r.transport.write(0x14, 1, DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK | DeviceStatus.DRIVER_OK);
    expect(r.driver.status & DeviceStatus.DEVICE_NEEDS_RESET).to.not.equal(0);
    // No config interrupt: DRIVER_OK was not set yet when the device broke.
    expect(r.driver.readIsr()).to.equal(0);
    r.driver.reset();
    expect(r.driver.status).to.equal(0);
    expect(r.driver.setup()).to.equal(true);
  });
});

describe("virtio-blk device", () => {
  it("writes, reads back, interrupts, and clears the ISR on read", async () => {
    const r = rig();
    r.driver.setup();
    const data = r.driver.alloc(1024);
    r.ram.write(
      data,
      new Uint8Array(1024).map((_, i) => i * 7),
    );
    const write = r.driver.blockRequest(RequestType.OUT, 10, [
      { gpa: data, length: 512 },
      { gpa: data + 512, length: 512 },
    ]);
    await settle();
    expect(status(r, write.statusGpa)).to.equal(BlkStatus.OK);
    expect(r.backend.bytes.subarray(10 * 512, 12 * 512)).to.deep.equal(r.ram.bytes.subarray(data, data + 1024));
    expect(r.driver.takeUsed()).to.deep.equal([{ head: write.head, length: 1 }]);
    expect(r.irq.level).to.equal(true);
    expect(r.driver.readIsr()).to.equal(IsrBit.QUEUE);
    expect(r.irq.level).to.equal(false);
    expect(r.driver.readIsr()).to.equal(0);

    const into = r.driver.alloc(1024);
    const read = r.driver.blockRequest(RequestType.IN, 10, [{ gpa: into, length: 1024 }]);
    await settle();
    expect(status(r, read.statusGpa)).to.equal(BlkStatus.OK);
    expect(r.ram.bytes.subarray(into, into + 1024)).to.deep.equal(r.ram.bytes.subarray(data, data + 1024));
    expect(r.driver.takeUsed()).to.deep.equal([{ head: read.head, length: 1025 }]);
    const flush = r.driver.blockRequest(RequestType.FLUSH, 0, []);
    await settle();
    expect(status(r, flush.statusGpa)).to.equal(BlkStatus.OK);
    expect(r.device.metrics.snapshot()).to.include({ requests: 3, reads: 1, writes: 1, flushes: 1, bytesRead: 1024, bytesWritten: 1024 });
  });

  it("answers GET_ID with the first 20 bytes of the serial", async () => {
    const r = rig();
    r.driver.setup();
    const buffer = r.driver.alloc(20);
    const request = r.driver.blockRequest(RequestType.GET_ID, 0, [{ gpa: buffer, length: 20 }]);
    expect(status(r, request.statusGpa)).to.equal(BlkStatus.OK);
    expect(new TextDecoder().decode(r.ram.bytes.subarray(buffer, buffer + 20))).to.equal("serial-0123456789abc");
  });

  const refusals: [string, number, number, (r: Rig) => { gpa: number; length: number }[], BlkStatus][] = [
    ["an unknown type", 99, 0, () => [], BlkStatus.UNSUPP],
    ["a sector past the end", RequestType.IN, 2047, (r) => [{ gpa: r.driver.alloc(1024), length: 1024 }], BlkStatus.IOERR],
    ["data that is not whole sectors", RequestType.OUT, 0, (r) => [{ gpa: r.driver.alloc(100), length: 100 }], BlkStatus.IOERR],
  ];
  for (const [what, type, sector, data, expected] of refusals) {
    it(`refuses ${what} through the status byte`, async () => {
      const r = rig();
      r.driver.setup();
      const request = r.driver.blockRequest(type, sector, data(r));
      await settle();
      expect(status(r, request.statusGpa)).to.equal(expected);
      expect(r.driver.takeUsed()).to.deep.equal([{ head: request.head, length: 1 }]);
      expect(r.device.metrics.invalidRequests).to.equal(1);
      expect(r.driver.status & DeviceStatus.DEVICE_NEEDS_RESET).to.equal(0);
    });
  }

  it("needs a reset for a chain without a writable status byte, and for a descriptor loop", () => {
    for (const build of [
      (d: TestVirtioDriver) => d.writeDescriptors(d.descAddr, [{ gpa: d.alloc(16), length: 16, flags: 0, next: 0 }]),
      (d: TestVirtioDriver) =>
        d.writeDescriptors(d.descAddr, [
          { gpa: d.alloc(16), length: 16, flags: DescriptorFlag.NEXT, next: 1 },
          { gpa: d.alloc(16), length: 16, flags: DescriptorFlag.NEXT, next: 0 },
        ]),
    ]) {
      const r = rig();
      r.driver.setup();
      build(r.driver);
      r.driver.publish(0);
      r.driver.notify();
      expect(r.driver.status & DeviceStatus.DEVICE_NEEDS_RESET).to.not.equal(0);
      expect(r.driver.readIsr()).to.equal(IsrBit.CONFIG);
      expect(r.driver.takeUsed()).to.deep.equal([]);
      expect(r.device.metrics.deviceNeedsReset).to.equal(1);
      // Further notifies are ignored until the driver resets the device.
      r.driver.notify();
      expect(r.device.metrics.deviceNeedsReset).to.equal(1);
    }
  });

  it("takes a request through an indirect descriptor table", async () => {
    const r = rig();
    r.driver.setup(VERSION_1 | INDIRECT);
    const { driver } = r;
    const header = driver.alloc(16);
    r.ram.write(header, Uint8Array.of(RequestType.OUT, 0, 0, 0, 0, 0, 0, 0, 3));
    const data = driver.alloc(512);
    r.ram.write(data, new Uint8Array(512).fill(0x5a));
    const statusGpa = driver.alloc(1);
    const table = driver.alloc(48);
    driver.writeDescriptors(table, [
      { gpa: header, length: 16, flags: DescriptorFlag.NEXT, next: 1 },
      { gpa: data, length: 512, flags: DescriptorFlag.NEXT, next: 2 },
      { gpa: statusGpa, length: 1, flags: DescriptorFlag.WRITE, next: 0 },
    ]);
    driver.writeDescriptors(driver.descAddr + 16 * 5, [{ gpa: table, length: 48, flags: DescriptorFlag.INDIRECT, next: 0 }]);
    driver.publish(5);
    driver.notify();
    await settle();
    expect(status(r, statusGpa)).to.equal(BlkStatus.OK);
    expect(r.backend.bytes.subarray(3 * 512, 4 * 512).every((b) => b === 0x5a)).to.equal(true);
    expect(driver.takeUsed()).to.deep.equal([{ head: 5, length: 1 }]);
  });

  it("with EVENT_IDX, publishes avail_event and interrupts only past used_event", async () => {
    const r = rig();
    r.driver.setup(VERSION_1 | EVENT_IDX);
    const usedEventAt = r.driver.availAddr + 4 + 2 * r.driver.queueSize;
    r.ram.write(usedEventAt, Uint8Array.of(1, 0)); // interrupt once used.idx passes 1
    r.driver.blockRequest(RequestType.FLUSH, 0, []);
    await settle();
    expect(r.irq.raised).to.equal(0);
    const availEvent = r.ram.bytes[r.driver.usedAddr + 4 + 8 * r.driver.queueSize];
    expect(availEvent).to.equal(1);
    r.driver.blockRequest(RequestType.FLUSH, 0, []);
    await settle();
    expect(r.irq.raised).to.equal(1);
  });

  it("emits the hook event at submission and completes only when the gate resolves", async () => {
    const hook = new BlockHook();
    const events: BlockIoEvent[] = [];
    let open!: () => void;
    hook.subscribe((event) => {
      events.push(event);
      return new Promise<void>((resolve) => (open = resolve));
    });
    const r = rig({ hook });
    r.driver.setup();
    const data = r.driver.alloc(512);
    r.ram.write(data, new Uint8Array(512).fill(1));
    const request = r.driver.blockRequest(RequestType.OUT, 7, [{ gpa: data, length: 512 }]);
    expect(events).to.deep.equal([
      { disk: "vdt", type: "write", sector: 7, sectors: 1, segments: [{ gpa: data, length: 512 }], data: new Uint8Array(512).fill(1) },
    ]);
    // The guest changes the buffer after submitting: the disk still gets the submitted bytes.
    r.ram.write(data, new Uint8Array(512).fill(2));
    await settle();
    expect(r.driver.takeUsed()).to.deep.equal([]);
    expect(r.backend.bytes[7 * 512]).to.equal(1);
    open();
    await settle();
    expect(r.driver.takeUsed()).to.deep.equal([{ head: request.head, length: 1 }]);
    expect(status(r, request.statusGpa)).to.equal(BlkStatus.OK);
  });

  it("fails a request with IOERR when a gate rejects, a listener throws, or the backend fails", async () => {
    for (const [listener, backend] of [
      [() => Promise.reject(new Error("secondary lost")), undefined],
      [
        () => {
          throw new Error("listener bug");
        },
        undefined,
      ],
      [() => undefined, new MemoryBackend(1 << 20, { readOnly: true })],
    ] as const) {
      const hook = new BlockHook();
      hook.subscribe(listener);
      const r = rig({ hook, backend });
      r.driver.setup();
      const request = r.driver.blockRequest(RequestType.OUT, 0, [{ gpa: r.driver.alloc(512), length: 512 }]);
      await settle();
      expect(status(r, request.statusGpa)).to.equal(BlkStatus.IOERR);
      expect(r.device.metrics.gateErrors + r.device.metrics.backendErrors).to.equal(1);
    }
  });

  it("drops the completion of a request in flight when the driver resets the device", async () => {
    const hook = new BlockHook();
    let open!: () => void;
    hook.subscribe(() => new Promise<void>((resolve) => (open = resolve)));
    const r = rig({ hook });
    r.driver.setup();
    const request = r.driver.blockRequest(RequestType.FLUSH, 0, []);
    r.driver.reset();
    open();
    await settle();
    expect(status(r, request.statusGpa)).to.equal(0xee);
    expect(r.driver.usedIdx).to.equal(0);
  });

  it("restores its state and runs again the requests that were in flight", async () => {
    const hook = new BlockHook();
    hook.subscribe(() => new Promise<void>(() => {})); // never completes in the original
    const r = rig({ hook });
    r.driver.setup();
    const data = r.driver.alloc(512);
    r.ram.write(data, new Uint8Array(512).fill(9));
    const request = r.driver.blockRequest(RequestType.OUT, 4, [{ gpa: data, length: 512 }]);
    // Through JSON, as a state image carries it.
    const checked = checkDiskState(JSON.parse(JSON.stringify({ transport: r.transport.saveState(), inFlight: r.device.inFlightHeads })));
    if (typeof checked === "string") throw new Error(checked);
    const state = checked;
    expect(state.inFlight).to.deep.equal([request.head]);
    // A damaged image is refused whole, naming what is wrong.
    const damaged = (change: (copy: { transport: Record<string, unknown>; inFlight: unknown }) => void) => {
      const copy = JSON.parse(JSON.stringify(state)) as { transport: Record<string, unknown>; inFlight: unknown };
      change(copy);
      return checkDiskState(copy);
    };
    expect(damaged((c) => (c.transport.driverFeatures = "zz"))).to.match(/driverFeatures/);
    expect(damaged((c) => (c.inFlight = [1, "x"]))).to.match(/inFlight\/1/);
    expect(damaged((c) => delete c.transport.queues)).to.match(/queues/);
    expect(damaged((c) => ((c.transport.queues as { size: number }[])[0]!.size = -1))).to.match(/queues\/0\/size/);

    const ram = plainRam(RAM_SIZE);
    ram.bytes.set(r.ram.bytes);
    const copy = rig({ ram });
    copy.transport.restoreState(state.transport);
    copy.device.resubmit(state.inFlight);
    await settle();
    expect(ram.bytes[request.statusGpa]).to.equal(BlkStatus.OK);
    expect(copy.backend.bytes[4 * 512]).to.equal(9);
    expect(copy.transport.read(0x14, 1) & DeviceStatus.DRIVER_OK).to.not.equal(0);
    expect(copy.transport.negotiatedFeatures).to.equal(r.transport.negotiatedFeatures);
  });
});

describe("virtio-blk restore with a write in flight at each point of its life", () => {
  /** Where the original machine is when it is captured; the copy then continues the way the guest would. */
  const points = [
    "made available, not yet notified",
    "taken, disk write pending",
    "disk done, gate pending",
    "completed, ISR unread",
    "ISR read, used entry unread",
  ] as const;
  type Point = (typeof points)[number];

  /** Stops the original at `point` and returns its state and RAM (through JSON, as a state image carries them). */
  async function capture(
    point: Point,
  ): Promise<{ state: { transport: TransportState; inFlight: number[] }; ram: Uint8Array; head: number; statusGpa: number; data: number }> {
    const never = new Promise<void>(() => {});
    const hook = new BlockHook();
    if (point === "disk done, gate pending") hook.subscribe(() => never);
    const stalled: BlockBackend = Object.assign(new MemoryBackend(1 << 20), { write: () => never });
    const r = rig({ hook, ...(point === "taken, disk write pending" && { backend: stalled }) });
    r.driver.setup();
    const data = r.driver.alloc(1024);
    r.ram.write(data, new Uint8Array(1024).fill(0x77));
    const request = r.driver.blockRequest(RequestType.OUT, 8, [{ gpa: data, length: 1024 }], { notify: point !== "made available, not yet notified" });
    await settle();
    if (point === "ISR read, used entry unread") expect(r.driver.readIsr()).to.equal(IsrBit.QUEUE);
    const state = JSON.parse(JSON.stringify({ transport: r.transport.saveState(), inFlight: r.device.inFlightHeads })) as {
      transport: TransportState;
      inFlight: number[];
    };
    return { state, ram: r.ram.bytes.slice(), ...request, data };
  }

  for (const point of points) {
    it(`${point}: completes exactly once after the restore, with its data on the disk`, async () => {
      const original = await capture(point);
      const ram = plainRam(RAM_SIZE);
      ram.bytes.set(original.ram);
      const copy = rig({ ram });
      copy.transport.restoreState(original.state.transport);
      copy.device.resubmit(original.state.inFlight);
      // The driver's next steps, as the restored guest takes them.
      copy.driver.resume();
      if (point === "made available, not yet notified") copy.driver.notify();
      await settle();
      if (point !== "ISR read, used entry unread") {
        expect(copy.irq.level, "the interrupt is pending").to.equal(true);
        expect(copy.driver.readIsr()).to.equal(IsrBit.QUEUE);
      }
      expect(copy.driver.takeUsed()).to.deep.equal([{ head: original.head, length: 1 }]);
      expect(ram.bytes[original.statusGpa]).to.equal(BlkStatus.OK);
      expect(copy.device.inFlightHeads).to.deep.equal([]);
      if (point !== "completed, ISR unread" && point !== "ISR read, used entry unread") {
        expect(
          copy.backend.bytes.subarray(8 * 512, 10 * 512).every((b) => b === 0x77),
          "the write reached the copy's disk",
        ).to.equal(true);
      }
      await settle();
      expect(copy.driver.takeUsed(), "no second completion").to.deep.equal([]);
    });
  }
});

describe("parseRequest", () => {
  const ram = plainRam(1 << 16);
  const header = (type: number, sector = 0) => {
    const bytes = new Uint8Array(16);
    new DataView(bytes.buffer).setUint32(0, type, true);
    new DataView(bytes.buffer).setBigUint64(8, BigInt(sector), true);
    ram.write(0x100, bytes);
    return { gpa: 0x100, length: 16, writable: false };
  };
  const status = { gpa: 0x200, length: 1, writable: true };
  const data = (length: number, writable: boolean) => ({ gpa: 0x1000, length, writable });
  const cases: [string, () => Parameters<typeof parseRequest>[0]["descriptors"], RequestErrorKind, boolean][] = [
    ["one descriptor", () => [header(RequestType.IN)], "status-missing", false],
    ["a read-only status", () => [header(RequestType.IN), { ...status, writable: false }], "status-not-writable", false],
    ["an empty status", () => [header(RequestType.IN), { ...status, length: 0 }], "status-empty", false],
    ["a writable header", () => [{ ...header(RequestType.IN), writable: true }, status], "header-not-readable", true],
    ["a short header", () => [{ ...header(RequestType.IN), length: 8 }, status], "header-too-short", true],
    ["an unknown type", () => [header(77), status], "unknown-type", true],
    ["a read into a read-only buffer", () => [header(RequestType.IN), data(512, false), status], "read-into-read-only-buffer", true],
    ["a write from a write-only buffer", () => [header(RequestType.OUT), data(512, true), status], "write-from-write-only-buffer", true],
    ["a partial sector", () => [header(RequestType.OUT), data(513, false), status], "data-not-sector-multiple", true],
    ["a sector past the end", () => [header(RequestType.IN, 100), data(512, true), status], "sector-out-of-range", true],
    ["a huge sector", () => [header(RequestType.IN, 2 ** 60), data(512, true), status], "sector-out-of-range", true],
    ["a read-only id buffer", () => [header(RequestType.GET_ID), data(20, false), status], "id-buffer-not-writable", true],
  ];
  for (const [what, descriptors, error, reportable] of cases) {
    it(`refuses ${what}: ${error}`, () => {
      const parsed = parseRequest({ head: 0, descriptors: descriptors() }, ram, 100);
      expect(parsed).to.deep.equal(reportable ? { error, statusGpa: 0x200 } : { error });
    });
  }

  it("accepts a read of the last sector", () => {
    const parsed = parseRequest({ head: 0, descriptors: [header(RequestType.IN, 99), data(512, true), status] }, ram, 100);
    expect(parsed).to.deep.equal({ kind: "read", sector: 99, data: [{ gpa: 0x1000, length: 512 }], dataLength: 512, statusGpa: 0x200 });
  });
});
