// One valid example of every control message and binary frame, plus a seeded PRNG,
// shared by the round-trip, fuzz and order tests.
import type { ControlMessage, ControlType } from "../protocol/messages.ts";
import type { BinaryFrame } from "../protocol/frames.ts";
import { encodeRunDelta } from "../protocol/run-delta.ts";
import { PAGE_SIZE } from "../../emulator/units.ts";

const NONCE = "A".repeat(43) + "=";

export const SAMPLE_MESSAGES: Record<ControlType, ControlMessage> = {
  challenge: { type: "challenge", protocol: "twinvm-replication", minVersion: 3, maxVersion: 3, role: "primary", epoch: 1, nonce: NONCE, nodeId: "node-a" },
  auth: { type: "auth", version: 3, proof: NONCE },
  welcome: { type: "welcome", version: 3 },
  refused: { type: "refused", code: "auth-failed", message: "wrong secret" },
  "init-begin": {
    type: "init-begin",
    seq: 0,
    epoch: 1,
    memoryBytes: 64 * 1024 * 1024,
    pageSize: PAGE_SIZE,
    diskMode: "io-log",
    disks: [
      { id: 0, name: "vda", sizeBytes: 1024 * 1024 },
      { id: 1, name: "vdb", sizeBytes: 4096, sha256: "a".repeat(64) },
    ],
  },
  "disk-digest": { type: "disk-digest", seq: 0, epoch: 1, disk: 0, sha256: "0123456789abcdef".repeat(4) },
  "init-end": { type: "init-end", seq: 0, epoch: 1, pageCount: 3, stateParts: 2 },
  "init-ack": { type: "init-ack", seq: 0, epoch: 1 },
  "sync-ack": { type: "sync-ack", seq: 1, epoch: 1 },
  heartbeat: { type: "heartbeat", epoch: 1, id: 0 },
  promoted: { type: "promoted", epoch: 2, resumedAtMs: 1764079200123.5 },
  handover: { type: "handover", epoch: 1, reason: "the primary's disk failed: EIO" },
  "verify-request": { type: "verify-request", id: 3, seq: 12, target: "disk", disk: 0, offset: 1 << 20, length: 4 << 20, chunkBytes: 1 << 16 },
  "verify-digests": { type: "verify-digests", id: 3, digests: ["ab".repeat(32), "cd".repeat(32)] },
  error: { type: "error", code: "order", message: "sync-commit 3, expected 2" },
  goodbye: { type: "goodbye", reason: "shutting down" },
};

/** A page mix like a guest's: some zero, some text, some random. */
export function samplePages(count: number, random: () => number): { indices: Uint32Array; data: Uint8Array } {
  const data = new Uint8Array(count * PAGE_SIZE);
  for (let p = 0; p < count; p++) {
    const page = data.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE);
    if (p % 3 === 1) page.set(new TextEncoder().encode(`page ${p} `.repeat(PAGE_SIZE / 8)).subarray(0, PAGE_SIZE));
    if (p % 3 === 2) for (let i = 0; i < PAGE_SIZE; i++) page[i] = Math.floor(random() * 256);
  }
  return { indices: Uint32Array.from({ length: count }, (_, i) => i * 2 + 10), data };
}

export function sampleFrames(random: () => number): BinaryFrame[] {
  const pages = samplePages(3, random);
  return [
    { kind: "memory-pages", seq: 1, epoch: 1, indices: pages.indices, data: pages.data, zeroIndices: new Uint32Array([1, 3, 500]) },
    { kind: "memory-pages", seq: 2, epoch: 1, indices: new Uint32Array(0), data: new Uint8Array(0), zeroIndices: new Uint32Array([7]) },
    {
      kind: "state-parts",
      seq: 0,
      epoch: 1,
      parts: [new TextEncoder().encode('{"cpu":{"eip":1234}}'.repeat(20)), new Uint8Array(0), pages.data.subarray(0, 300)],
    },
    {
      kind: "page-updates",
      seq: 4,
      epoch: 1,
      updates: [
        { page: 3, encoding: "zero", bytes: new Uint8Array(0) },
        { page: 9, encoding: "full", bytes: pages.data.subarray(PAGE_SIZE, 2 * PAGE_SIZE) },
        { page: 12, encoding: "runs", bytes: samplePageDelta(pages.data.subarray(2 * PAGE_SIZE, 3 * PAGE_SIZE)) },
      ],
    },
    {
      kind: "state-changes",
      seq: 5,
      epoch: 3,
      partCount: 4,
      changes: [
        { index: 0, encoding: "runs", length: 10, bytes: Uint8Array.of(3, 1, 7, 6, 0) },
        { index: 3, encoding: "full", length: 3, bytes: Uint8Array.of(1, 2, 3) },
      ],
    },
    {
      kind: "sync-commit",
      seq: 6,
      epoch: 1,
      pageUpdates: 3,
      stateChanges: 1,
      blockFrames: 1,
      outputFrames: 0,
      log: [
        {
          type: "write",
          disk: 0,
          sector: 8,
          sectors: 2,
          segments: [
            { gpa: 0x1000, length: 512 },
            { gpa: 0x3000, length: 512 },
          ],
        },
        { type: "write", disk: 1, sector: 0, sectors: 2, segments: [], inline: true },
        { type: "flush", disk: 0 },
      ],
    },
    { kind: "disk-blocks", seq: 9, epoch: 1, disk: 2, sector: 2 ** 31 + 5, data: new Uint8Array(1024).fill(0x5a) },
    { kind: "disk-chunk", seq: 0, epoch: 1, disk: 0, offset: 2 ** 33, length: 4096, data: pages.data.subarray(0, 4096) },
    { kind: "disk-chunk", seq: 0, epoch: 1, disk: 1, offset: 0, length: 1 << 20, data: "zeros" },
    {
      kind: "held-output",
      seq: 10,
      epoch: 2,
      first: 2 ** 40,
      released: 2 ** 40 - 3,
      outputs: [
        { kind: "console", bytes: new TextEncoder().encode("login: ") },
        { kind: "frame", bytes: pages.data.subarray(0, 1514) },
        { kind: "console", bytes: new Uint8Array(0) },
      ],
    },
    { kind: "held-output", seq: 11, epoch: 2, first: 7, released: 7, outputs: [] },
  ];
}

/** A run delta turning `page` into a copy with three bytes changed. */
export function samplePageDelta(page: Uint8Array): Uint8Array {
  const changed = page.slice();
  for (const at of [5, 6, 4000]) changed[at] = changed[at]! ^ 0xff;
  return encodeRunDelta(page, changed, PAGE_SIZE)!;
}

/** mulberry32: small, fast, and the same sequence for the same seed on every run. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Resolves to the rejection of `promise`, failing if it resolves. */
export async function rejectionOf(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error("expected a rejection, got a result");
}
