// What the page needs from the browser, checked before anything starts, each
// with a sentence a student can act on.

export interface Capabilities {
  /** Show these and do not start. */
  missing: string[];
  /** Show these and start anyway. */
  warnings: string[];
}

/** The smallest module using a SIMD instruction (v128.const; drop): validates only where wasm SIMD exists. */
const SIMD_PROBE = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x04, 0x01, 0x60, 0x00, 0x00, 0x03, 0x02, 0x01, 0x00, 0x0a, 0x17, 0x01, 0x15, 0x00, 0xfd, 0x0c, 0x00,
  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1a, 0x0b,
]);

export function checkCapabilities(): Capabilities {
  const missing: string[] = [];
  const warnings: string[] = [];
  if (typeof WebAssembly !== "object") {
    missing.push("This browser has no WebAssembly: the x86 emulator cannot run. Use a current Chrome, Edge or Firefox.");
  } else if (!WebAssembly.validate(SIMD_PROBE)) {
    warnings.push("No WebAssembly SIMD here: finding changed memory pages falls back to slower JavaScript, so each sync stops the guest longer.");
  }
  if (!window.isSecureContext || globalThis.crypto?.subtle === undefined) {
    missing.push(
      `The page is not a secure context (${location.origin}), so the browser hides crypto.subtle, which the nodes need to authenticate each other. ` +
        "Open it as http://127.0.0.1:PORT/ or http://localhost:PORT/ (as twinvm demo prints), or over https.",
    );
  }
  if (typeof Worker !== "function") missing.push("This browser has no Web Workers: each machine needs its own worker thread.");
  if (typeof CompressionStream !== "function" || typeof DecompressionStream !== "function") {
    missing.push("This browser lacks CompressionStream/DecompressionStream (Chrome 80+, Firefox 113+, Safari 16.4+): the snapshot and the protocol need them.");
  }
  return { missing, warnings };
}
