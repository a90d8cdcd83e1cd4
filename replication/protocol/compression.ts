// Optional deflate of a frame's data section, through the streams API that both
// Node 20 and browsers have. Inflation is bounded by the length the frame
// declares, so a small hostile frame cannot expand into gigabytes.
import { ProtocolError } from "./errors.ts";

const FORMAT = "deflate-raw";
/** Input slice per write, so one write cannot make the inflater emit unbounded output before we look. */
const INFLATE_INPUT_SLICE = 64 * 1024;

export async function deflate(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as Uint8Array<ArrayBuffer>]).stream().pipeThrough(new CompressionStream(FORMAT));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Inflates `compressed`, which must expand to exactly `expectedLength` bytes. */
export async function inflateExact(compressed: Uint8Array, expectedLength: number, what: string): Promise<Uint8Array> {
  const stream = new DecompressionStream(FORMAT);
  const writer = stream.writable.getWriter();
  const reader = stream.readable.getReader();
  // Errors of corrupt input surface on the reader; the writer's copies are noise.
  const feeding = (async () => {
    for (let offset = 0; offset < compressed.length; offset += INFLATE_INPUT_SLICE) {
      await writer.write(compressed.subarray(offset, offset + INFLATE_INPUT_SLICE) as Uint8Array<ArrayBuffer>);
    }
    await writer.close();
  })().catch(() => undefined);

  const out = new Uint8Array(expectedLength);
  let filled = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (filled + value.length > expectedLength) {
        throw new ProtocolError("oversized", `${what}: compressed data inflates beyond the declared ${expectedLength} bytes`);
      }
      out.set(value, filled);
      filled += value.length;
    }
  } catch (error) {
    await reader.cancel().catch(() => undefined);
    await writer.abort().catch(() => undefined);
    if (error instanceof ProtocolError) throw error;
    throw new ProtocolError("malformed", `${what}: compressed data is corrupt`, { cause: error });
  }
  await feeding;
  if (filled !== expectedLength) {
    throw new ProtocolError("inconsistent", `${what}: compressed data inflates to ${filled} bytes, header says ${expectedLength}`);
  }
  return out;
}
