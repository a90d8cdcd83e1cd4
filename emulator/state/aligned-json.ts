// JSON in which every number sits right-aligned in a field of fixed width (whitespace, which
// JSON allows). v86's state tree is mostly numbers; when one gains or loses a digit between
// two captures, plain JSON shifts all the text after it, and a delta against the previous
// capture (replication/protocol/run-delta.ts) has to carry the whole rest of the tree. With
// fixed-width numbers the text keeps its layout and the delta carries only what changed.
//
// The writer puts UTF-8 straight into one reused buffer: the tree is written at every sync,
// and building it from thousands of small strings was most of what a sync allocated.

/** Width of an int32 (`-2147483648`): most of v86's numbers. */
const INT32_WIDTH = 11;
/** Width of the longest double JSON writes (`-1.7976931348623157e+308`). */
const NUMBER_WIDTH = 24;

/** Distinct strings the writer keeps encoded (v86's tree holds about ten). */
const MAX_CACHED_STRINGS = 1024;

const SPACE = 0x20;
const MINUS = 0x2d;
const DIGIT_0 = 0x30;
const utf8 = new TextEncoder();
const NULL = utf8.encode("null");
const TRUE = utf8.encode("true");
const FALSE = utf8.encode("false");

/** Writes one JSON text with aligned numbers; `take()` copies it out and starts the next. */
export class AlignedJsonWriter {
  #bytes = new Uint8Array(1 << 16);
  #length = 0;
  /** `"key":` of the keys seen so far (a state tree has a handful). */
  #keys = new Map<string, Uint8Array>();
  /**
   * Strings as JSON, by value: a state tree names the type of each of its ~60 typed arrays
   * ("Int32Array"...) at every capture, and TextEncoder for each was a tenth of a capture.
   */
  #strings = new Map<string, Uint8Array>();

  /** The text written since the last take, as bytes of its own. */
  take(): Uint8Array {
    const text = this.#bytes.slice(0, this.#length);
    this.#length = 0;
    return text;
  }

  /** A structural character: `[ ] { } ,`. */
  char(code: number): void {
    this.#ensure(1);
    this.#bytes[this.#length++] = code;
  }

  /** `"name":` */
  key(name: string): void {
    let encoded = this.#keys.get(name);
    if (encoded === undefined) {
      encoded = utf8.encode(`${JSON.stringify(name)}:`);
      this.#keys.set(name, encoded);
    }
    this.#put(encoded);
  }

  number(value: number): void {
    if ((value | 0) === value && !Object.is(value, -0)) return this.#int32(value);
    // NaN and infinities become null, as in JSON.stringify; -0 becomes 0.
    this.#putAscii(JSON.stringify(value).padStart(Number.isInteger(value) && Math.abs(value) < 2 ** 31 ? INT32_WIDTH : NUMBER_WIDTH));
  }

  /** A primitive as JSON.stringify writes it inside an array (undefined, functions and symbols are null). */
  primitive(value: unknown): void {
    switch (typeof value) {
      case "number":
        return this.number(value);
      case "string":
        return this.#put(this.#string(value));
      case "boolean":
        return this.#put(value ? TRUE : FALSE);
      case "bigint":
        throw new TypeError("alignedJson: a bigint has no JSON form");
      case "object":
        if (value === null) return this.#put(NULL);
        throw new TypeError("alignedJson: an object is not a primitive");
      default:
        return this.#put(NULL);
    }
  }

  /** `[item, ...]`, each written by `write` (holes reach it as undefined). */
  array(items: ArrayLike<unknown>, write: (item: unknown) => void): void {
    this.char(0x5b);
    for (let i = 0; i < items.length; i++) {
      if (i > 0) this.char(0x2c);
      write(items[i]);
    }
    this.char(0x5d);
  }

  /** Any JSON value: plain objects and arrays (holes, undefined and functions as JSON.stringify treats them), primitives. */
  value(value: unknown): void {
    if (typeof value !== "object" || value === null) return this.primitive(value);
    if (Array.isArray(value)) return this.array(value, (item) => this.value(item));
    if (typeof (value as { toJSON?: unknown }).toJSON === "function") throw new TypeError("alignedJson: objects with toJSON are not supported");
    this.char(0x7b);
    let first = true;
    for (const [name, item] of Object.entries(value)) {
      if (item === undefined || typeof item === "function" || typeof item === "symbol") continue;
      if (!first) this.char(0x2c);
      first = false;
      this.key(name);
      this.value(item);
    }
    this.char(0x7d);
  }

  #string(value: string): Uint8Array {
    let encoded = this.#strings.get(value);
    if (encoded === undefined) {
      encoded = utf8.encode(JSON.stringify(value));
      // Bounded: a tree that held ever new strings would otherwise grow this without end.
      if (this.#strings.size < MAX_CACHED_STRINGS) this.#strings.set(value, encoded);
    }
    return encoded;
  }

  /** Right-aligned in INT32_WIDTH, digits written from the end (no string). */
  #int32(value: number): void {
    this.#ensure(INT32_WIDTH);
    const start = this.#length;
    let at = start + INT32_WIDTH;
    // Magnitude as a double: -(2 ** 31) has no int32 negation.
    let rest = Math.abs(value);
    do {
      const next = Math.floor(rest / 10);
      this.#bytes[--at] = DIGIT_0 + rest - next * 10;
      rest = next;
    } while (rest > 0);
    if (value < 0) this.#bytes[--at] = MINUS;
    this.#bytes.fill(SPACE, start, at);
    this.#length = start + INT32_WIDTH;
  }

  #putAscii(text: string): void {
    this.#ensure(text.length);
    for (let i = 0; i < text.length; i++) this.#bytes[this.#length++] = text.charCodeAt(i);
  }

  #put(bytes: Uint8Array): void {
    this.#ensure(bytes.length);
    this.#bytes.set(bytes, this.#length);
    this.#length += bytes.length;
  }

  #ensure(extra: number): void {
    if (this.#length + extra <= this.#bytes.length) return;
    const grown = new Uint8Array(Math.max(this.#bytes.length * 2, this.#length + extra));
    grown.set(this.#bytes.subarray(0, this.#length));
    this.#bytes = grown;
  }
}

/** What JSON.stringify(value) gives, but with numbers padded; parses to the same value. */
export function alignedJson(value: unknown): string {
  if (value === undefined || typeof value === "function" || typeof value === "symbol") throw new TypeError(`alignedJson: a ${typeof value} has no JSON form`);
  const writer = new AlignedJsonWriter();
  writer.value(value);
  return new TextDecoder().decode(writer.take());
}
