// A scrolling list of the disk requests each sync carried: which disk and sectors,
// the guest-physical pages the data sits in, and how the secondary got it.
import type { IoReport, SyncReport } from "../engine-adapter.ts";
import { PAGE_SIZE } from "../../../../emulator/units.ts";

const MAX_ROWS = 300;
const HOW_TEXT: Record<IoReport["how"], string> = {
  replayed: "replayed from replica RAM",
  inline: "data sent inline (page changed)",
  "block-copy": "blocks copied",
  flush: "flush",
  "read-replayed": "read again from the replica's disk (pages not sent)",
};

export class IoLog {
  constructor(readonly list: HTMLElement) {}

  show(report: SyncReport): void {
    if (report.seq === 0) {
      this.#add(`#0 initial sync: ${report.pages.length} pages, device state, disk`, "initial");
      return;
    }
    for (const entry of report.io) {
      const disk = `vd${String.fromCharCode(0x61 + entry.disk)}`;
      if (entry.how === "flush") {
        this.#add(`#${report.seq} ${disk} flush`, "flush");
        continue;
      }
      const pages = new Set(entry.segments.flatMap(({ gpa, length }) => range(Math.floor(gpa / PAGE_SIZE), Math.ceil((gpa + length) / PAGE_SIZE))));
      const where =
        entry.segments.length === 0
          ? ""
          : ` ← gpa ${hex(entry.segments[0]!.gpa)}${entry.segments.length > 1 ? ` +${entry.segments.length - 1} more` : ""} (${pages.size} page${pages.size === 1 ? "" : "s"})`;
      const verb = entry.how === "read-replayed" ? "read" : "write";
      this.#add(`#${report.seq} ${disk} ${verb} sector ${entry.sector} ×${entry.sectors}${where}: ${HOW_TEXT[entry.how]}`, entry.how);
    }
  }

  #add(text: string, kind: string): void {
    const row = document.createElement("li");
    row.textContent = text;
    row.className = `io-${kind}`;
    const atBottom = this.list.scrollTop + this.list.clientHeight >= this.list.scrollHeight - 4;
    this.list.append(row);
    while (this.list.children.length > MAX_ROWS) this.list.firstElementChild!.remove();
    if (atBottom) this.list.scrollTop = this.list.scrollHeight;
  }
}

function range(from: number, to: number): number[] {
  return Array.from({ length: Math.max(0, to - from) }, (_, i) => from + i);
}

function hex(value: number): string {
  return `0x${value.toString(16)}`;
}
