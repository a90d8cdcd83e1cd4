// JSON in which every number sits right-aligned in a field of fixed width (whitespace, which
// JSON allows). v86's state tree is mostly numbers; when one gains or loses a digit between
// two captures, plain JSON shifts all the text after it, and a delta against the previous
// capture (replication/protocol/run-delta.ts) has to carry the whole rest of the tree. With
// fixed-width numbers the text keeps its layout and the delta carries only what changed.

/** Width of an int32 (`-2147483648`): most of v86's numbers. */
const INT32_WIDTH = 11;
/** Width of the longest double JSON writes (`-1.7976931348623157e+308`). */
const NUMBER_WIDTH = 24;

/** What JSON.stringify(value) gives, but with numbers padded; parses to the same value. */
export function alignedJson(value: unknown): string {
  const out: string[] = [];
  write(value, out);
  return out.join("");
}

function write(value: unknown, out: string[]): void {
  switch (typeof value) {
    case "number": {
      const text = JSON.stringify(value); // NaN and infinities become null, as in JSON.stringify
      const width = Number.isInteger(value) && value >= -(2 ** 31) && value < 2 ** 31 ? INT32_WIDTH : NUMBER_WIDTH;
      out.push(text.padStart(width));
      return;
    }
    case "string":
    case "boolean":
      out.push(JSON.stringify(value));
      return;
    case "object":
      if (value === null) {
        out.push("null");
        return;
      }
      if (Array.isArray(value)) {
        out.push("[");
        for (let i = 0; i < value.length; i++) {
          if (i > 0) out.push(",");
          // As JSON.stringify: holes (v86's state arrays have them), undefined and functions are null.
          const item: unknown = value[i];
          if (item === undefined || typeof item === "function" || typeof item === "symbol") out.push("null");
          else write(item, out);
        }
        out.push("]");
        return;
      }
      if (typeof (value as { toJSON?: unknown }).toJSON === "function") throw new TypeError("alignedJson: objects with toJSON are not supported");
      out.push("{");
      let first = true;
      for (const [key, item] of Object.entries(value)) {
        if (item === undefined || typeof item === "function" || typeof item === "symbol") continue;
        if (!first) out.push(",");
        first = false;
        out.push(JSON.stringify(key), ":");
        write(item, out);
      }
      out.push("}");
      return;
    default:
      // undefined, functions, symbols at the top level; bigint throws in JSON.stringify as well
      if (typeof value === "bigint") throw new TypeError("alignedJson: a bigint has no JSON form");
      throw new TypeError(`alignedJson: a ${typeof value} has no JSON form`);
  }
}
