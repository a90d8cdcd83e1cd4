// Finds WebSocket frame boundaries (RFC 6455, section 5.2) in a client's byte stream
// (the HTTP upgrade request, then frames) that arrives in arbitrary TCP chunks,
// without keeping the payloads: the fault proxy uses it to cut a link exactly between
// two frames of a burst. It reads only the framing (opcode, length), never the
// payload, so it works whatever the frames carry.

export interface FrameEnd {
  /** Offset in the chunk just after the frame's last byte. */
  end: number;
  opcode: number;
  payloadBytes: number;
}

const END_OF_HTTP_HEADER = [0x0d, 0x0a, 0x0d, 0x0a];

export class WsFrameBoundaries {
  /** Bytes of the upgrade request's end marker matched so far; 4 once the frames begin. */
  #httpEndMatched = 0;
  /** Header bytes of the frame being read (at most 14). */
  #header: number[] = [];
  /** Payload bytes of the current frame still to come; -1 while reading a header. */
  #remaining = -1;
  #opcode = 0;
  #payloadBytes = 0;

  /** Feeds the next chunk; returns the frames that end inside it, in order. */
  push(chunk: Uint8Array): FrameEnd[] {
    const ends: FrameEnd[] = [];
    let offset = 0;
    // The upgrade request comes first: frames start after its blank line.
    while (this.#httpEndMatched < END_OF_HTTP_HEADER.length && offset < chunk.length) {
      const byte = chunk[offset++]!;
      this.#httpEndMatched = byte === END_OF_HTTP_HEADER[this.#httpEndMatched] ? this.#httpEndMatched + 1 : byte === 0x0d ? 1 : 0;
    }
    while (offset < chunk.length) {
      if (this.#remaining < 0) {
        this.#header.push(chunk[offset++]!);
        const length = this.#headerLength();
        if (length === undefined || this.#header.length < length) continue;
        this.#payloadBytes = this.#payloadLength();
        this.#opcode = this.#header[0]! & 0x0f;
        this.#header = [];
        this.#remaining = this.#payloadBytes;
      }
      const take = Math.min(this.#remaining, chunk.length - offset);
      offset += take;
      this.#remaining -= take;
      if (this.#remaining === 0) {
        ends.push({ end: offset, opcode: this.#opcode, payloadBytes: this.#payloadBytes });
        this.#remaining = -1;
      }
    }
    return ends;
  }

  /** The header's full length once its first two bytes are known. */
  #headerLength(): number | undefined {
    if (this.#header.length < 2) return undefined;
    const second = this.#header[1]!;
    const lengthCode = second & 0x7f;
    const extended = lengthCode === 126 ? 2 : lengthCode === 127 ? 8 : 0;
    return 2 + extended + (second & 0x80 ? 4 : 0);
  }

  #payloadLength(): number {
    const lengthCode = this.#header[1]! & 0x7f;
    if (lengthCode < 126) return lengthCode;
    const bytes = this.#header.slice(2, lengthCode === 126 ? 4 : 10);
    // Frames here are at most 16 MiB (the replication limit): the high bytes of a 64-bit length are zero.
    return bytes.reduce((value, byte) => value * 256 + byte, 0);
  }
}
