// Reads two inspections of the node that runs the guest, taken a couple of seconds apart
// while a command hangs, and says what the guest is doing: stopped (no instructions), waiting
// on a disk (requests in flight: held by the replication gate, or by the disk itself; an ISR
// left set while its IRQ is low is a lost interrupt), or running with nothing in flight (the
// shell or its output is stuck elsewhere). One line per finding, most telling first.
import type { NodeInspection } from "../control-request.ts";
import type { TransportInspection } from "../../emulator/virtio/pci-transport.ts";
import type { InFlightRequest } from "../../emulator/virtio-blk/device.ts";

/** What VirtioBlkDisk.inspect() answers. */
export type DiskInspection = TransportInspection & { inFlight: (Omit<InFlightRequest, "since"> & { ageMs: number })[] };

/** Requests in flight longer than this are reported as stuck. */
const STUCK_MS = 5000;

export function diagnose(first: NodeInspection, second: NodeInspection): string[] {
  const findings: string[] = [];
  const a = first.machine;
  const b = second.machine;
  if (a === undefined || b === undefined) return [`no machine to inspect on ${second.name} (${second.engine.state})`];
  const ran = b.instructions - a.instructions;
  if (ran <= 0)
    findings.push(`GUEST STOPPED: no instruction ran between the inspections (machine ${b.state}, halted ${b.cpu.halted}, IF ${b.cpu.interruptsEnabled})`);
  for (const [key, raw] of Object.entries(b.devices)) {
    const disk = raw as unknown as DiskInspection;
    const stuck = disk.inFlight.filter((request) => request.ageMs >= STUCK_MS);
    if (disk.isr !== 0 && disk.intx !== undefined && !disk.intx.lineHigh) {
      const before = a.devices[key] as unknown as DiskInspection | undefined;
      const lasting = before !== undefined && before.isr !== 0 && before.intx?.lineHigh === false;
      findings.push(`LOST INTERRUPT on ${key}: ISR ${disk.isr} unread while IRQ ${disk.intx.irq} is low${lasting ? " (in both inspections)" : ""}`);
    }
    for (const queue of disk.queues) {
      const waiting = (queue.availIdx - queue.lastAvailIdx) & 0xffff;
      if (queue.enabled && waiting !== 0) findings.push(`${key}: ${waiting} chain(s) made available and not taken by the device`);
    }
    if (stuck.length > 0) {
      const held = stuck.filter((request) => request.backendDone && !request.gatesDone).length;
      const backend = stuck.filter((request) => !request.backendDone).length;
      const oldest = Math.max(...stuck.map((request) => request.ageMs));
      const waiting = [held > 0 ? `${held} held by the replication gate` : "", backend > 0 ? `${backend} waiting for the disk image` : ""]
        .filter(Boolean)
        .join(", ");
      findings.push(`${key}: ${stuck.length} request(s) in flight for ${(oldest / 1000).toFixed(1)} s or more (${waiting || "done, not yet returned"})`);
    }
  }
  const engine = second.engine;
  if ((engine.heldRequests ?? 0) > 0 || (engine.heldOutputBytes ?? 0) > 0) {
    findings.push(`engine ${engine.state}: holds ${engine.heldRequests ?? 0} guest request(s) and ${engine.heldOutputBytes ?? 0} console bytes`);
  }
  const blocked = [...b.consoleTail.matchAll(/task:(\S+)\s+state:D/g)].map((match) => match[1]!);
  if (blocked.length > 0) findings.push(`the guest's watchdog lists blocked tasks: ${[...new Set(blocked)].join(", ")} (see the console tail)`);
  if (ran > 0 && findings.length === 0) {
    findings.push(
      `guest runs (${ran} instructions in between, halted ${b.cpu.halted}, IF ${b.cpu.interruptsEnabled}, IRQs requested 0x${b.cpu.requested.toString(16)} in service 0x${b.cpu.inService.toString(16)}) with no disk request stuck`,
    );
  }
  return findings;
}
