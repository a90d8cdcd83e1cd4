// Mutual HMAC-SHA256 challenge-response. Each side proves knowledge of the shared
// secret by MACing a transcript that binds its own role, both challenges (so both
// nonces, offered versions and epochs) and the chosen version: a proof cannot be
// replayed on another connection, reflected back to its sender, or survive a
// downgrade of the version lists. Browser-safe: WebCrypto only.
import { NONCE_BYTES, PROTOCOL_NAME } from "./limits.ts";
import type { ChallengeMessage } from "./messages.ts";

const PROOF_LABEL = `${PROTOCOL_NAME}/auth-proof/v1`;

export function randomNonce(): string {
  return toBase64(globalThis.crypto.getRandomValues(new Uint8Array(NONCE_BYTES)));
}

/** An HMAC key; importing once per handshake keeps the raw secret out of later calls. */
export async function importSecret(secret: Uint8Array): Promise<CryptoKey> {
  return globalThis.crypto.subtle.importKey("raw", secret as Uint8Array<ArrayBuffer>, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
}

/** The proof `prover` sends; the verifier computes the same with the roles swapped in its head. */
export async function computeProof(key: CryptoKey, prover: ChallengeMessage, verifier: ChallengeMessage, version: number): Promise<string> {
  const transcript = JSON.stringify([PROOF_LABEL, version, challengeFields(prover), challengeFields(verifier)]);
  const mac = await globalThis.crypto.subtle.sign("HMAC", key, new TextEncoder().encode(transcript));
  return toBase64(new Uint8Array(mac));
}

export async function verifyProof(key: CryptoKey, proof: string, prover: ChallengeMessage, verifier: ChallengeMessage, version: number): Promise<boolean> {
  const expected = fromBase64(await computeProof(key, prover, verifier, version));
  return constantTimeEqual(fromBase64(proof), expected);
}

/** Compares without an early exit, so timing does not reveal how many leading bytes matched. */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  let difference = a.length ^ b.length;
  for (let i = 0; i < b.length; i++) difference |= (a[i] ?? 0) ^ b[i]!;
  return difference === 0;
}

function challengeFields(challenge: ChallengeMessage): unknown[] {
  return [challenge.protocol, challenge.role, challenge.minVersion, challenge.maxVersion, challenge.epoch, challenge.nonce, challenge.nodeId];
}

export function toBase64(bytes: Uint8Array): string {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary);
}

/** Decodes base64 the schema already accepted; anything else yields an empty array. */
export function fromBase64(text: string): Uint8Array {
  try {
    const binary = atob(text);
    return Uint8Array.from(binary, (c) => c.charCodeAt(0));
  } catch {
    return new Uint8Array(0);
  }
}
