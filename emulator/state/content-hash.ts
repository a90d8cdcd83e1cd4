// A fast 64-bit content fingerprint: names a state so that a delta can say which base it
// needs. Not cryptographic; it guards against mix-ups and damage, not against an attacker.

/** 16 hex digits. Two 32-bit multiply-rotate lanes over little-endian words, then the tail bytes. */
export function contentHash(bytes: Uint8Array): string {
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  const words = new Uint32Array(aligned.buffer, aligned.byteOffset, aligned.length >>> 2);
  let h1 = 0x811c9dc5 ^ bytes.length;
  let h2 = 0x9e3779b9 ^ Math.imul(bytes.length, 0x85ebca6b);
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!;
    h1 = Math.imul(rotl(h1 ^ w, 13), 0x5bd1e995);
    h2 = Math.imul(rotl(h2 + w, 17), 0xcc9e2d51) ^ h1;
  }
  for (let i = words.length * 4; i < aligned.length; i++) {
    h1 = Math.imul(h1 ^ aligned[i]!, 0x01000193);
    h2 = Math.imul(h2 + aligned[i]!, 0x85ebca6b);
  }
  h1 = fmix(h1 ^ h2);
  h2 = fmix(h2 ^ h1);
  return hex8(h1) + hex8(h2);
}

function rotl(x: number, r: number): number {
  return (x << r) | (x >>> (32 - r));
}

/** MurmurHash3's finaliser: spreads every input bit over the output. */
function fmix(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

function hex8(n: number): string {
  return (n >>> 0).toString(16).padStart(8, "0");
}
