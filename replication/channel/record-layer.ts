// Confidentiality and integrity for everything after the handshake. Keys come from the
// shared secret and both handshake nonces (HKDF-SHA256), one AES-256-GCM key per
// direction; every record's 96-bit IV is its sequence number in that direction, so a
// replayed, reordered, dropped, altered or reflected record fails authentication. HKDF is
// WebCrypto's everywhere; AES-GCM is Node's synchronous one in Node and WebCrypto's in
// browsers (aead.ts), the same bytes either way. A record is one transport message:
//
//   record    := AES-GCM(key[direction], iv = 0x00000000 || u64 BE sequence, plaintext) (+16-byte tag)
//   plaintext := u8 type (1 control JSON, 2 binary frame, 3 binary frames back to back) || payload
import { ProtocolError } from "../protocol/errors.ts";
import { PROTOCOL_NAME } from "../protocol/limits.ts";
import { AEAD_TAG_BYTES, createAead, type Aead } from "./aead.ts";

/** `frames`: several binary frames of one sync in one record (each frame's header gives its length). */
export const RecordType = { control: 1, frame: 2, frames: 3 } as const;
export type RecordTypeCode = (typeof RecordType)[keyof typeof RecordType];

export const RECORD_TAG_BYTES = AEAD_TAG_BYTES;
/** A session ends before any key encrypts this many records (AES-GCM's safe use of one key). */
export const MAX_RECORDS_PER_KEY = 2 ** 32;

/** Keys for one session: `send` seals what this side sends, `receive` opens what the peer sends. */
export interface RecordKeys {
  send: Aead;
  receive: Aead;
}

/**
 * Derives both directions' keys. `initiatorNonce`/`acceptorNonce` are the raw handshake
 * nonces (the salt); `initiator` says which side we are, to pick the directions.
 */
export async function deriveRecordKeys(
  secret: Uint8Array,
  initiatorNonce: Uint8Array,
  acceptorNonce: Uint8Array,
  version: number,
  initiator: boolean,
  /** "webcrypto": never Node's binding (for comparing the two). */
  aead: "auto" | "webcrypto" = "auto",
  /** Names the protocol the keys are for (HKDF info), so that two protocols sharing a secret never share keys. */
  protocol: string = PROTOCOL_NAME,
): Promise<RecordKeys> {
  const subtle = globalThis.crypto.subtle;
  const base = await subtle.importKey("raw", secret as Uint8Array<ArrayBuffer>, "HKDF", false, ["deriveBits"]);
  const salt = new Uint8Array(initiatorNonce.length + acceptorNonce.length);
  salt.set(initiatorNonce);
  salt.set(acceptorNonce, initiatorNonce.length);
  const info = new TextEncoder().encode(`${protocol}/record-keys/v${version}`);
  const bits = new Uint8Array(await subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt, info }, base, 512));
  const [toAcceptor, toInitiator] = await Promise.all([createAead(bits.subarray(0, 32), aead), createAead(bits.subarray(32, 64), aead)]);
  bits.fill(0);
  return initiator ? { send: toAcceptor, receive: toInitiator } : { send: toInitiator, receive: toAcceptor };
}

/** Seals outbound records in call order; opens inbound ones in arrival order. Not reentrant per direction. */
export class RecordLayer {
  #sent = 0;
  #received = 0;

  constructor(private readonly keys: RecordKeys) {}

  get recordsSent(): number {
    return this.#sent;
  }

  /** Seals one record whose payload is `payloads` back to back; call in the order the records go on the wire. */
  async seal(type: RecordTypeCode, ...payloads: Uint8Array[]): Promise<Uint8Array> {
    const { iv, plaintext } = this.#next(type, payloads);
    return this.keys.send.seal(iv, plaintext);
  }

  /** Whether `sealNow` can seal (the AEAD is synchronous: Node's, not WebCrypto's). */
  get sealsNow(): boolean {
    return this.keys.send.implementation === "node";
  }

  /** As `seal`, in this call; only where `sealsNow`. */
  sealNow(type: RecordTypeCode, ...payloads: Uint8Array[]): Uint8Array {
    if (!this.sealsNow) throw new Error("sealNow: this record layer's AEAD is asynchronous");
    const { iv, plaintext } = this.#next(type, payloads);
    const record = this.keys.send.seal(iv, plaintext);
    if (!(record instanceof Uint8Array)) throw new Error("sealNow: the AEAD answered asynchronously");
    return record;
  }

  #next(type: RecordTypeCode, payloads: readonly Uint8Array[]): { iv: Uint8Array; plaintext: Uint8Array } {
    if (this.#sent >= MAX_RECORDS_PER_KEY) throw new ProtocolError("oversized", "this session's key has sealed its limit of records; reconnect");
    const iv = ivFor(this.#sent++);
    const plaintext = new Uint8Array(1 + payloads.reduce((n, payload) => n + payload.length, 0));
    plaintext[0] = type;
    let at = 1;
    for (const payload of payloads) {
      plaintext.set(payload, at);
      at += payload.length;
    }
    return { iv, plaintext };
  }

  /** Opens one record; call in arrival order. Throws ProtocolError("auth-failed") for anything not sealed by the peer as its next record. */
  async open(record: Uint8Array): Promise<{ type: RecordTypeCode; payload: Uint8Array }> {
    if (record.length < RECORD_TAG_BYTES + 1) throw new ProtocolError("truncated", `record of ${record.length} bytes is shorter than its tag`);
    const iv = ivFor(this.#received++);
    let plaintext: Uint8Array;
    try {
      plaintext = await this.keys.receive.open(iv, record);
    } catch (error) {
      throw new ProtocolError("auth-failed", `record ${this.#received - 1} does not authenticate (tampered, replayed, reordered or not from the peer)`, {
        cause: error,
      });
    }
    const type = plaintext[0];
    if (type !== RecordType.control && type !== RecordType.frame && type !== RecordType.frames)
      throw new ProtocolError("malformed", `record of unknown type ${type}`);
    return { type, payload: plaintext.subarray(1) };
  }
}

function ivFor(sequence: number): Uint8Array<ArrayBuffer> {
  const iv = new Uint8Array(12);
  new DataView(iv.buffer).setBigUint64(4, BigInt(sequence), false);
  return iv;
}
