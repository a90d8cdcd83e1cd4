// Guest memory as a grid of 4 KiB pages: each sync lights the pages it carried,
// and pages an I/O log entry points at (the data the secondary replays) light in
// another colour. The glow fades so that the rhythm of syncs stays visible.
import type { SyncReport } from "../engine-adapter.ts";
import { PAGE_SIZE } from "../../../../emulator/units.ts";

const FADE_PER_FRAME = 0.98;

export class PageMap {
  readonly #context: CanvasRenderingContext2D;
  readonly #columns: number;
  readonly #pages: number;
  readonly #cell: number;
  /** Per page: glow of "carried by a sync" and of "an I/O log entry points here". */
  readonly #carried: Float32Array;
  readonly #ioData: Float32Array;
  readonly #image: ImageData;
  #animating = false;

  constructor(canvas: HTMLCanvasElement, memoryBytes: number, columns = 256) {
    this.#pages = Math.ceil(memoryBytes / PAGE_SIZE);
    this.#columns = columns;
    this.#cell = 2;
    canvas.width = columns * this.#cell;
    canvas.height = Math.ceil(this.#pages / columns) * this.#cell;
    this.#context = canvas.getContext("2d")!;
    this.#carried = new Float32Array(this.#pages);
    this.#ioData = new Float32Array(this.#pages);
    this.#image = this.#context.createImageData(canvas.width, canvas.height);
    this.#draw();
  }

  show(report: SyncReport): void {
    for (const page of report.pages) if (page < this.#pages) this.#carried[page] = 1;
    for (const entry of report.io) {
      for (const { gpa, length } of entry.segments) {
        for (let page = Math.floor(gpa / PAGE_SIZE); page < Math.ceil((gpa + length) / PAGE_SIZE) && page < this.#pages; page++) this.#ioData[page] = 1;
      }
    }
    if (!this.#animating) {
      this.#animating = true;
      requestAnimationFrame(() => this.#frame());
    }
  }

  #frame(): void {
    let glowing = false;
    for (let page = 0; page < this.#pages; page++) {
      if (this.#carried[page]! > 0.02) {
        this.#carried[page]! *= FADE_PER_FRAME;
        glowing = true;
      } else this.#carried[page] = 0;
      if (this.#ioData[page]! > 0.02) {
        this.#ioData[page]! *= FADE_PER_FRAME;
        glowing = true;
      } else this.#ioData[page] = 0;
    }
    this.#draw();
    if (glowing) requestAnimationFrame(() => this.#frame());
    else this.#animating = false;
  }

  #draw(): void {
    const { data, width } = this.#image;
    const cell = this.#cell;
    for (let page = 0; page < this.#pages; page++) {
      const io = this.#ioData[page]!;
      const carried = this.#carried[page]!;
      // Dark background; blue for carried pages; green wins where an I/O log entry points.
      const green = io >= carried;
      const glow = green ? io : carried;
      const r = 24 + glow * (green ? 40 : 55);
      const g = 28 + glow * (green ? 200 : 130);
      const b = 34 + glow * (green ? 60 : 200);
      const x0 = (page % this.#columns) * cell;
      const y0 = Math.floor(page / this.#columns) * cell;
      for (let y = y0; y < y0 + cell; y++) {
        for (let x = x0; x < x0 + cell; x++) {
          const at = (y * width + x) * 4;
          data[at] = r;
          data[at + 1] = g;
          data[at + 2] = b;
          data[at + 3] = 255;
        }
      }
    }
    this.#context.putImageData(this.#image, 0, 0);
  }
}
