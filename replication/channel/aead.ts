// AES-256-GCM for the record layer, in two implementations with one wire format
// (ciphertext followed by the 16-byte tag): WebCrypto, which runs everywhere but is
// asynchronous (in Node each call is a round trip through the thread pool, ~70 µs, and a
// sync seals and opens half a dozen records in sequence), and Node's synchronous OpenSSL
// binding, reached through process.getBuiltinModule so that browser bundles never see it.

export const AEAD_TAG_BYTES = 16;

/** One direction's key. `open` rejects (or throws) when the record does not authenticate. */
export interface Aead {
  readonly implementation: "webcrypto" | "node";
  seal(iv: Uint8Array, plaintext: Uint8Array): Uint8Array | Promise<Uint8Array>;
  open(iv: Uint8Array, record: Uint8Array): Uint8Array | Promise<Uint8Array>;
}

/** What this module needs of node:crypto (typed here: the module itself is never imported). */
interface NodeGcm {
  createCipheriv(
    algorithm: "aes-256-gcm",
    key: Uint8Array,
    iv: Uint8Array,
  ): { update(data: Uint8Array): Uint8Array; final(): Uint8Array; getAuthTag(): Uint8Array };
  createDecipheriv(
    algorithm: "aes-256-gcm",
    key: Uint8Array,
    iv: Uint8Array,
  ): { setAuthTag(tag: Uint8Array): void; update(data: Uint8Array): Uint8Array; final(): Uint8Array };
}

function nodeCrypto(): NodeGcm | undefined {
  const process = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
  return process?.getBuiltinModule?.("node:crypto") as NodeGcm | undefined;
}

/** The fastest AEAD this runtime has for `key` (32 bytes): Node's when available, else WebCrypto's. */
export async function createAead(key: Uint8Array, prefer: "auto" | "webcrypto" = "auto"): Promise<Aead> {
  if (key.length !== 32) throw new RangeError(`AES-256-GCM needs a 32-byte key, got ${key.length}`);
  const node = prefer === "auto" ? nodeCrypto() : undefined;
  return node !== undefined ? nodeAead(node, key.slice()) : webCryptoAead(key);
}

function nodeAead(crypto: NodeGcm, key: Uint8Array): Aead {
  return {
    implementation: "node",
    seal(iv, plaintext) {
      const cipher = crypto.createCipheriv("aes-256-gcm", key, iv);
      const body = cipher.update(plaintext);
      const last = cipher.final();
      const tag = cipher.getAuthTag();
      const record = new Uint8Array(body.length + last.length + tag.length);
      record.set(body);
      record.set(last, body.length);
      record.set(tag, body.length + last.length);
      return record;
    },
    open(iv, record) {
      if (record.length < AEAD_TAG_BYTES) throw new Error("record shorter than its tag");
      const decipher = crypto.createDecipheriv("aes-256-gcm", key, iv);
      decipher.setAuthTag(record.subarray(record.length - AEAD_TAG_BYTES));
      const body = decipher.update(record.subarray(0, record.length - AEAD_TAG_BYTES));
      const last = decipher.final(); // throws when the tag does not verify
      if (last.length === 0) return new Uint8Array(body.buffer, body.byteOffset, body.length);
      const plaintext = new Uint8Array(body.length + last.length);
      plaintext.set(body);
      plaintext.set(last, body.length);
      return plaintext;
    },
  };
}

async function webCryptoAead(key: Uint8Array): Promise<Aead> {
  const subtle = globalThis.crypto.subtle;
  const cryptoKey = await subtle.importKey("raw", key as Uint8Array<ArrayBuffer>, { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
  return {
    implementation: "webcrypto",
    seal: async (iv, plaintext) =>
      new Uint8Array(await subtle.encrypt({ name: "AES-GCM", iv: iv as Uint8Array<ArrayBuffer> }, cryptoKey, plaintext as Uint8Array<ArrayBuffer>)),
    open: async (iv, record) =>
      new Uint8Array(await subtle.decrypt({ name: "AES-GCM", iv: iv as Uint8Array<ArrayBuffer> }, cryptoKey, record as Uint8Array<ArrayBuffer>)),
  };
}
