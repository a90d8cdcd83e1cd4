// passt's frame stream (its "qemu" socket format): each Ethernet frame preceded by its
// length as a 4-byte big-endian integer. The decoder takes bytes as the socket delivers
// them (any split), never buffers more than one legal frame, and skips frames it cannot
// use without losing its place in the stream.

export const STREAM_HEADER_BYTES = 4;

export type StreamDrop = "oversized" | "malformed";

export function encodeStreamFrame(frame: Uint8Array): Uint8Array {
  const out = new Uint8Array(STREAM_HEADER_BYTES + frame.length);
  new DataView(out.buffer).setUint32(0, frame.length);
  out.set(frame, STREAM_HEADER_BYTES);
  return out;
}

export class StreamFrameDecoder {
  readonly #header = new Uint8Array(STREAM_HEADER_BYTES);
  #headerFill = 0;
  #frame: Uint8Array | undefined;
  #frameFill = 0;
  /** Bytes of an unusable frame still to pass over. */
  #skip = 0;

  /**
   * `maxFrameBytes`: longer frames are skipped as "oversized"; `minFrameBytes`: shorter
   * ones (an Ethernet header is 14 bytes) as "malformed".
   */
  constructor(
    private readonly maxFrameBytes: number,
    private readonly minFrameBytes: number,
    private readonly onFrame: (frame: Uint8Array) => void,
    private readonly onDrop: (reason: StreamDrop, length: number) => void,
  ) {}

  push(chunk: Uint8Array): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.#skip > 0) {
        const n = Math.min(this.#skip, chunk.length - at);
        this.#skip -= n;
        at += n;
        continue;
      }
      if (this.#frame !== undefined) {
        const n = Math.min(this.#frame.length - this.#frameFill, chunk.length - at);
        this.#frame.set(chunk.subarray(at, at + n), this.#frameFill);
        this.#frameFill += n;
        at += n;
        if (this.#frameFill === this.#frame.length) {
          const frame = this.#frame;
          this.#frame = undefined;
          this.onFrame(frame);
        }
        continue;
      }
      const n = Math.min(STREAM_HEADER_BYTES - this.#headerFill, chunk.length - at);
      this.#header.set(chunk.subarray(at, at + n), this.#headerFill);
      this.#headerFill += n;
      at += n;
      if (this.#headerFill < STREAM_HEADER_BYTES) continue;
      this.#headerFill = 0;
      const length = new DataView(this.#header.buffer).getUint32(0);
      if (length > this.maxFrameBytes) {
        this.onDrop("oversized", length);
        this.#skip = length;
      } else if (length < this.minFrameBytes) {
        this.onDrop("malformed", length);
        this.#skip = length;
      } else {
        // A fresh buffer per frame: the frame outlives the chunk (it may sit in the log).
        this.#frame = new Uint8Array(length);
        this.#frameFill = 0;
      }
    }
  }

  /** Bytes of a frame begun but not finished (for a report when the stream ends). */
  get partialBytes(): number {
    return this.#headerFill + (this.#frame ? this.#frameFill : 0);
  }
}
