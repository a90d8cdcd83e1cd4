// Two virtio-blk disks whose INTx pins share one IRQ, on v86's real interrupt controller
// (a blank machine: no guest; the test driver plays Linux's virtio_pci). A shared PCI
// interrupt is wired-OR: the IRQ must stay high while either disk has an unread ISR. v86
// keeps one level per IRQ, so a disk that lowered it for itself also lowered it for the
// other: in level-triggered mode (what the BIOS sets for PCI IRQs) that interrupt is gone,
// and a guest waiting on the other disk's last request waits forever.
import { expect } from "chai";
import { MemoryBackend } from "../block/memory-backend.ts";
import { Machine } from "../machine.ts";
import { defaultGuest } from "../node/images.ts";
import type { IntxInspection } from "../v86-internals.ts";
import { VirtioBlkDisk, virtioBlkDisk } from "../virtio-blk/disk.ts";
import { RequestType } from "../virtio-blk/spec.ts";
import type { TransportInspection } from "../virtio/pci-transport.ts";
import { TestVirtioDriver } from "./helpers/virtio-test-driver.ts";

const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

describe("virtio INTx on a shared IRQ (v86's PIC)", function () {
  let machine: Machine;
  let disks: VirtioBlkDisk[];
  let drivers: TestVirtioDriver[];

  const intx = (disk: VirtioBlkDisk): IntxInspection => (disk.inspect() as unknown as TransportInspection).intx!;

  beforeEach(async function () {
    machine = await Machine.createBlank({
      ...defaultGuest(),
      devices: ["vda", "vdb"].map((id) => virtioBlkDisk({ backend: new MemoryBackend(1 << 20), id })),
    });
    disks = machine.devices as VirtioBlkDisk[];
    // Scratch areas well inside the blank machine's RAM, one per driver.
    drivers = disks.map((disk, i) => new TestVirtioDriver(disk.transport, machine.ram, { base: (8 + 2 * i) << 20, size: 1 << 20 }));
    for (const driver of drivers) expect(driver.setup()).to.equal(true);
  });

  afterEach(async () => machine.destroy());

  it("routes both disks' pins to one IRQ", function () {
    const [a, b] = disks.map(intx);
    expect(a!.irq).to.equal(b!.irq);
  });

  it("keeps the IRQ high while the other disk's ISR is unread (the handler chain of a shared IRQ)", async function () {
    const [vda, vdb] = drivers as [TestVirtioDriver, TestVirtioDriver];
    // Linux runs every handler on the IRQ in turn; each reads (and so clears) its own disk's ISR.
    vda.blockRequest(RequestType.FLUSH, 0, []);
    await settle();
    expect(intx(disks[0]!)).to.include({ asserted: true, lineHigh: true });
    expect(vda.readIsr()).to.equal(1); // vda's handler
    // vda completes another request before vdb's handler has run: vda raises the IRQ again.
    vda.blockRequest(RequestType.FLUSH, 0, []);
    await settle();
    expect(vdb.readIsr()).to.equal(0); // vdb's handler: nothing for vdb, and it must not drop vda's level
    expect(intx(disks[0]!), "vda's interrupt after vdb's ISR read").to.include({ asserted: true, lineHigh: true });
    expect(vda.readIsr()).to.equal(1); // the next run of the handlers
    expect(intx(disks[0]!)).to.include({ asserted: false, lineHigh: false });
  });

  it("lowers the IRQ only when the last disk holding it has been read", async function () {
    for (const driver of drivers) driver.blockRequest(RequestType.FLUSH, 0, []);
    await settle();
    expect(disks.map((disk) => intx(disk).asserted)).to.deep.equal([true, true]);
    expect(drivers[0]!.readIsr()).to.equal(1);
    expect(intx(disks[1]!)).to.include({ asserted: true, lineHigh: true });
    expect(drivers[1]!.readIsr()).to.equal(1);
    expect(intx(disks[1]!)).to.include({ asserted: false, lineHigh: false });
  });

  it("a restored transport with an unread ISR holds the IRQ even after a sharer lowers it", async function () {
    drivers[0]!.blockRequest(RequestType.FLUSH, 0, []);
    await settle();
    const states = disks.map((disk) => disk.saveState());
    const copy = await Machine.createBlank({
      ...defaultGuest(),
      devices: ["vda", "vdb"].map((id) => virtioBlkDisk({ backend: new MemoryBackend(1 << 20), id })),
    });
    try {
      const restored = copy.devices as VirtioBlkDisk[];
      restored.forEach((disk, i) => disk.restoreState(states[i]!));
      expect(intx(restored[0]!)).to.include({ asserted: true, lineHigh: true });
      // vdb's handler reads its (empty) ISR first: vda's restored interrupt must survive it.
      const vdb = new TestVirtioDriver(restored[1]!.transport, copy.ram, { base: 10 << 20, size: 1 << 20 });
      expect(vdb.readIsr()).to.equal(0);
      expect(intx(restored[0]!)).to.include({ asserted: true, lineHigh: true });
    } finally {
      await copy.destroy();
    }
  });

  describe("with v86's own virtio-net on the same IRQ", () => {
    /** v86's virtio-net as its virtio code drives the pin (src/virtio.js: raise_irq sets the ISR, lower_irq clears it). */
    const nic = () =>
      (machine.emulator.cpu.devices as unknown as { virtio_net: { virtio: { pci_id: number; raise_irq(bit: number): void; lower_irq(): void } } }).virtio_net
        .virtio;

    it("shares the disks' IRQ (as in the default guest: 10: virtio0, virtio1, virtio2)", () => {
      const irq = intx(disks[0]!).irq;
      const space = machine.emulator.cpu.devices.pci.device_spaces[nic().pci_id]!;
      const pin = (space[15]! >> 8) & 0xff;
      expect(machine.emulator.cpu.devices.pci.isa_bridge_space8[0x60 + (((nic().pci_id >> 3) + pin - 2) & 3)]).to.equal(irq);
    });

    it("the NIC's ISR read does not drop a disk's level, nor a disk's read the NIC's", async function () {
      drivers[0]!.blockRequest(RequestType.FLUSH, 0, []);
      await settle();
      nic().lower_irq(); // virtio-net's handler runs first on the shared IRQ: nothing for it
      expect(intx(disks[0]!), "vda's interrupt after the NIC's ISR read").to.include({ asserted: true, lineHigh: true });
      expect(drivers[0]!.readIsr()).to.equal(1);
      expect(intx(disks[0]!)).to.include({ asserted: false, lineHigh: false });
      nic().raise_irq(1); // a frame for the guest
      expect(drivers[1]!.readIsr()).to.equal(0); // vdb's handler: nothing for it
      expect(intx(disks[1]!).lineHigh, "the NIC's interrupt after vdb's ISR read").to.equal(true);
      nic().lower_irq();
      expect(intx(disks[1]!).lineHigh).to.equal(false);
    });
  });
});
