// Byte-array equality, the inner loop of per-sync change detection (about 1 MB of device
// buffers a sync). Node's Buffer.compare is a native memcmp, ~10x a JavaScript word loop;
// it is feature-detected on the global, so this module stays browser-safe.
type NativeCompare = (a: Uint8Array, b: Uint8Array) => number;
const nativeCompare: NativeCompare | undefined = (globalThis as { Buffer?: { compare: NativeCompare } }).Buffer?.compare;

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  if (nativeCompare !== undefined) return nativeCompare(a, b) === 0;
  if (a.byteOffset % 4 === 0 && b.byteOffset % 4 === 0) {
    const words = a.length >>> 2;
    const wa = new Uint32Array(a.buffer, a.byteOffset, words);
    const wb = new Uint32Array(b.buffer, b.byteOffset, words);
    for (let i = 0; i < words; i++) if (wa[i] !== wb[i]) return false;
    for (let i = words << 2; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
  }
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
