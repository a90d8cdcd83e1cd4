// Random and malformed descriptor chains, feature and register writes driven into
// the virtio-blk device of a booted machine. Nothing may escape the emulator (the
// transport's catch-all would count an internal error), and the guest must keep
// running. Seeded: a failure names its seed and case, and repeats.
import { expect } from "chai";
import { MemoryBackend } from "../block/memory-backend.ts";
import { Machine } from "../machine.ts";
import { defaultGuest } from "../node/images.ts";
import { DescriptorFlag, DeviceStatus } from "../virtio/constants.ts";
import { Bar0 } from "../virtio/pci-layout.ts";
import { VirtioBlkDisk, virtioBlkDisk } from "../virtio-blk/disk.ts";
import { RequestType } from "../virtio-blk/spec.ts";
import { seededRandom } from "../../replication/test/fixtures.ts";
import { EVENT_IDX, INDIRECT, TestVirtioDriver, VERSION_1, type RawDescriptor } from "./helpers/virtio-test-driver.ts";

const SEED = Number(process.env.FUZZ_SEED ?? 0x5eed);
const CASES = 3000;
const SCRATCH_BYTES = 2 << 20;

describe("virtio-blk fuzzing on a running guest", function () {
  let machine: Machine;
  const warnings: string[] = [];

  before(async function () {
    machine = new Machine({
      ...defaultGuest(),
      devices: [virtioBlkDisk({ backend: new MemoryBackend(1 << 20), id: "vda", log: (line) => warnings.push(line) })],
    });
    await machine.boot();
  });

  after(async () => machine?.destroy());

  it(`survives ${CASES} random cases (seed ${SEED}) and the guest keeps working`, async function () {
    // Scratch RAM the guest does not use: above the last "System RAM" range the kernel knows.
    const iomem = (await machine.exec("grep 'System RAM' /proc/iomem | tail -1")).output;
    const ramEnd = parseInt(iomem.split("-")[1]!, 16) + 1;
    const scratch = { base: machine.ram.size - SCRATCH_BYTES, size: SCRATCH_BYTES };
    expect(ramEnd, iomem).to.be.at.most(scratch.base);
    // The disk's virtio bus name depends on which devices come first (the NIC is a virtio device too).
    const vdaDevice = (await machine.exec("basename $(readlink -f /sys/block/vda/device)")).output.trim();
    expect(vdaDevice).to.match(/^virtio\d+$/);
    expect((await machine.exec(`echo ${vdaDevice} > /sys/bus/virtio/drivers/virtio_blk/unbind`)).exitCode).to.equal(0);
    // The NIC shares the disk's IRQ (10). With its driver bound, about one run in four ended
    // with the guest halted and the master PIC's cascade (IRQ 2) in service for good, the
    // serial port's IRQ 4 blocked behind it: an interplay of v86's PIC with a level-triggered
    // line toggled thousands of times while the guest is paused, not yet understood (see the
    // issue notes). This test is about the disk: its line is left to the disk alone.
    const nicDevice = (await machine.exec("basename $(readlink -f /sys/class/net/eth0/device)")).output.trim();
    expect(nicDevice).to.match(/^virtio\d+$/);
    expect((await machine.exec(`echo ${nicDevice} > /sys/bus/virtio/drivers/virtio_net/unbind`)).exitCode).to.equal(0);

    await machine.pause();
    const disk = machine.devices[0] as VirtioBlkDisk;
    const ram = machine.ram;
    const driver = new TestVirtioDriver(disk.transport, ram, scratch);
    const random = seededRandom(SEED);
    const int = (n: number) => Math.floor(random() * n);
    const pick = <T>(items: readonly T[]): T => items[int(items.length)]!;
    // Device-writable buffers stay in scratch RAM (or outside RAM): the device really writes there.
    const address = (): number =>
      pick([
        () => driver.alloc(int(4096) + 1),
        () => scratch.base + scratch.size - int(64), // straddles the end of RAM
        () => ram.size + int(1 << 20),
        () => 2 ** 32 + int(1 << 20),
        () => 2 ** 63,
      ])();
    const length = () => pick([0, 1, 15, 16, 512, 513, 4096, int(70000), 2 ** 32 - 1]);
    const randomDescriptors = (count: number, tableSize: number): RawDescriptor[] =>
      Array.from({ length: count }, () => ({ gpa: address(), length: length(), flags: int(8), next: int(tableSize + 2) }));

    const counts = { setups: 0, requests: 0, garbage: 0, indirect: 0, jumps: 0, registers: 0 };
    for (let n = 0; n < CASES; n++) {
      const context = `seed ${SEED} case ${n}`;
      if (driver.queueSize === 0 || driver.status & DeviceStatus.DEVICE_NEEDS_RESET || random() < 0.02) {
        counts.setups++;
        const features = pick([VERSION_1 | INDIRECT, VERSION_1 | INDIRECT | EVENT_IDX, VERSION_1, INDIRECT, VERSION_1 | (1n << 50n)]);
        if (!driver.setup(features, pick([1, 2, 8, 64, 256, 256]))) driver.queueSize = 0;
        continue;
      }
      switch (int(6)) {
        case 0:
        case 1: {
          // well-formed framing, random content
          counts.requests++;
          const type = pick([RequestType.IN, RequestType.OUT, RequestType.FLUSH, RequestType.GET_ID, 3, 0xffffffff]);
          const data = Array.from({ length: int(4) }, () => ({ gpa: driver.alloc(4096), length: pick([512, 1024, 4096, 100]) }));
          driver.blockRequest(type, pick([0, 1, 2047, 2048, 2 ** 40, int(2048)]), data);
          break;
        }
        case 2: {
          // random descriptors in the main table
          counts.garbage++;
          driver.writeDescriptors(driver.descAddr, randomDescriptors(driver.queueSize, driver.queueSize));
          driver.publish(...Array.from({ length: int(4) + 1 }, () => int(driver.queueSize + 2)));
          driver.notify();
          break;
        }
        case 3: {
          // an indirect table of random descriptors
          counts.indirect++;
          const entries = int(8) + 1;
          const table = driver.alloc(16 * entries);
          driver.writeDescriptors(table, randomDescriptors(entries, entries));
          const flags = pick([DescriptorFlag.INDIRECT, DescriptorFlag.INDIRECT | DescriptorFlag.NEXT, DescriptorFlag.INDIRECT | DescriptorFlag.WRITE]);
          const head = int(driver.queueSize);
          driver.writeDescriptors(driver.descAddr + 16 * head, [
            { gpa: pick([table, address()]), length: pick([16 * entries, 16 * entries + 3, 0]), flags, next: 0 },
          ]);
          driver.publish(head);
          driver.notify();
          break;
        }
        case 4: // the available index jumps
          counts.jumps++;
          driver.setAvailIdx(int(0x10000));
          driver.notify(int(Bar0.NOTIFY_SIZE / Bar0.NOTIFY_OFF_MULTIPLIER));
          break;
        default: {
          // register writes a confused driver might make (ring addresses excepted)
          counts.registers++;
          const offset = pick([0x00, 0x04, 0x08, 0x0c, 0x10, 0x12, 0x14, 0x15, 0x16, 0x18, 0x1a, 0x1c, 0x1e, 0x38, 0x3a, 0x3f, 0x40, 0x41, 0x80, 0x9f, 0xff]);
          const width = pick([1, 2, 4] as const);
          if (random() < 0.5) disk.transport.read(offset, width);
          else disk.transport.write(offset, width, int(2 ** 32));
          if (driver.status === 0) driver.queueSize = 0; // a status write of 0 reset it
        }
      }
      if (n % 25 === 0) await new Promise((resolve) => setImmediate(resolve));
      expect(disk.transport.internalErrors, context).to.equal(0);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(disk.transport.internalErrors).to.equal(0);
    expect(warnings.length).to.be.greaterThan(0); // misbehaviour is logged, at a bounded rate
    const metrics = disk.metrics;
    expect(metrics.requests).to.be.greaterThan(CASES / 10);
    expect(metrics.invalidRequests).to.be.greaterThan(0);
    expect(metrics.deviceNeedsReset).to.be.greaterThan(0);
    expect(counts.setups).to.be.greaterThan(CASES / 50);

    driver.reset();
    machine.run();
    expect((await machine.exec("echo alive")).output).to.equal("alive\n");
    // Linux takes the device back and it serves real I/O again.
    expect((await machine.exec(`echo ${vdaDevice} > /sys/bus/virtio/drivers/virtio_blk/bind`)).exitCode).to.equal(0);
    const io = await machine.exec(
      "dd if=/dev/urandom of=/dev/vda bs=4k count=8 oflag=direct 2>/dev/null && dd if=/dev/vda bs=4k count=8 iflag=direct 2>/dev/null | wc -c",
    );
    expect(io.output.trim()).to.equal("32768");
  });
});
