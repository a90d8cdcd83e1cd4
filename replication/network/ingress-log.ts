// The gateway's log of ingress frames not yet known to be in a secondary's copy. Ids are
// given on entry and are contiguous (a frame that does not fit gets none), so the log is
// the id range [firstId, lastId] and a lookup is an index. Bounded in frames and bytes:
// when full, the newest frame is refused (tail drop, as a full NIC ring does). Dropping
// the oldest instead would leave a hole in what a new primary must be given again, after
// frames its guest may never have seen; a refused new frame is only a loss TCP repairs.

export interface IngressLogLimits {
  maxFrames: number;
  maxBytes: number;
}

export class IngressLog {
  #frames: Uint8Array[] = [];
  #head = 0;
  #firstId: number;
  #bytes = 0;

  /** `firstId`: the id the first frame will get. */
  constructor(
    private readonly limits: IngressLogLimits,
    firstId: number,
  ) {
    if (!Number.isSafeInteger(firstId) || firstId < 1) throw new RangeError(`first ingress id must be a positive safe integer, got ${firstId}`);
    this.#firstId = firstId;
  }

  /** Id of the oldest frame held (or of the next frame, when empty). */
  get firstId(): number {
    return this.#firstId;
  }

  /** Id of the newest frame ever logged (firstId - 1 when nothing was). */
  get lastId(): number {
    return this.#firstId + this.frames - 1;
  }

  get frames(): number {
    return this.#frames.length - this.#head;
  }

  get bytes(): number {
    return this.#bytes;
  }

  hasRoomFor(bytes: number): boolean {
    return this.frames < this.limits.maxFrames && this.#bytes + bytes <= this.limits.maxBytes;
  }

  /** Logs the frame and returns its id; call hasRoomFor first. */
  append(frame: Uint8Array): number {
    if (!this.hasRoomFor(frame.length)) throw new RangeError("ingress log is full");
    this.#frames.push(frame);
    this.#bytes += frame.length;
    return this.lastId;
  }

  get(id: number): Uint8Array | undefined {
    if (id < this.#firstId || id > this.lastId) return undefined;
    return this.#frames[this.#head + (id - this.#firstId)];
  }

  /** Forgets every frame up to and including `id`. */
  trimThrough(id: number): void {
    while (this.frames > 0 && this.#firstId <= id) {
      this.#bytes -= this.#frames[this.#head]!.length;
      this.#frames[this.#head++] = EMPTY;
      this.#firstId++;
    }
    // Compact once the dead prefix outweighs the live part: amortised O(1) per frame.
    if (this.#head > 1024 && this.#head > this.frames) {
      this.#frames = this.#frames.slice(this.#head);
      this.#head = 0;
    }
  }
}

const EMPTY = new Uint8Array(0);
