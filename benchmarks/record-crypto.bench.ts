// What the encrypted record layer costs: AES-256-GCM sealing and opening of records the size
// of real replication traffic, with Node's synchronous binding (what Node uses) and with
// WebCrypto (what browsers use; asynchronous), against the plaintext path's own work (one
// copy of the payload into the record). Per record size, and per sync for the record mixes
// a 4 KiB write and a 64 KiB write produce (sizes as measured by the talk benchmark).
import { randomBytes } from "node:crypto";
import { RecordLayer, RecordType, deriveRecordKeys } from "../replication/channel/record-layer.ts";
import type { BenchContext, BenchReport } from "./run.ts";

const SIZES = [64, 1024, 8 << 10, 64 << 10, 1 << 20];

/** Records of one sync, both directions: page updates, state changes, disk blocks, commit, ack. */
const SYNCS: { name: string; records: number[] }[] = [
  { name: "4 KiB write, logging-replay (pages ~8 KiB, state ~3 KiB, commit, ack)", records: [8 << 10, 3 << 10, 120, 40] },
  { name: "64 KiB write, dirty-block-copy (+ 64 KiB of blocks)", records: [12 << 10, 3 << 10, 64 << 10, 100, 40] },
  { name: "1 MiB write, dirty-block-copy", records: [24 << 10, 3 << 10, 1 << 20, 100, 40] },
];

async function layers(aead: "auto" | "webcrypto"): Promise<[RecordLayer, RecordLayer]> {
  const secret = randomBytes(32);
  const a = randomBytes(32);
  const b = randomBytes(32);
  const [sender, receiver] = await Promise.all([deriveRecordKeys(secret, a, b, 2, true, aead), deriveRecordKeys(secret, a, b, 2, false, aead)]);
  return [new RecordLayer(sender), new RecordLayer(receiver)];
}

/** Median microseconds of `work` over `rounds` calls (after a warm-up). */
async function medianMicros(rounds: number, work: () => Promise<unknown>): Promise<number> {
  for (let i = 0; i < Math.min(20, rounds); i++) await work();
  const times: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const started = performance.now();
    await work();
    times.push((performance.now() - started) * 1000);
  }
  times.sort((x, y) => x - y);
  return times[times.length >> 1]!;
}

export default async function recordCrypto(context: BenchContext): Promise<BenchReport> {
  const [sender, receiver] = await layers("auto");
  const [webSender, webReceiver] = await layers("webcrypto");
  const sealOpen = async (payload: Uint8Array) => receiver.open(await sender.seal(RecordType.frame, payload));
  const webSealOpen = async (payload: Uint8Array) => webReceiver.open(await webSender.seal(RecordType.frame, payload));
  const plain = (payload: Uint8Array) => {
    const record = new Uint8Array(1 + payload.length);
    record[0] = RecordType.frame;
    record.set(payload, 1);
    return Promise.resolve(record.subarray(1));
  };
  const bySize = [];
  for (const size of SIZES) {
    const payload = randomBytes(size);
    const rounds = size >= 1 << 20 ? 60 : 400;
    const sealed = await medianMicros(rounds, () => sealOpen(payload));
    const web = await medianMicros(rounds, () => webSealOpen(payload));
    const copied = await medianMicros(rounds, () => plain(payload));
    bySize.push({ bytes: size, sealOpenUs: sealed, webCryptoUs: web, plainUs: copied, mibPerSecond: size / (1 << 20) / (sealed / 1e6) });
    context.log(`${size} B: seal+open ${sealed.toFixed(1)} us (WebCrypto ${web.toFixed(1)} us), plain ${copied.toFixed(1)} us`);
  }
  const perSync = [];
  for (const sync of SYNCS) {
    const payloads = sync.records.map((size) => randomBytes(size));
    const sealed = await medianMicros(200, async () => {
      for (const payload of payloads) await sealOpen(payload);
    });
    const web = await medianMicros(200, async () => {
      for (const payload of payloads) await webSealOpen(payload);
    });
    const copied = await medianMicros(200, async () => {
      for (const payload of payloads) await plain(payload);
    });
    perSync.push({ sync: sync.name, bytes: sync.records.reduce((s, n) => s + n, 0), sealOpenUs: sealed, webCryptoUs: web, plainUs: copied });
  }
  const table =
    "| record bytes | seal + open µs, Node | MiB/s, Node | seal + open µs, WebCrypto | plaintext µs |\n|---|---|---|---|---|\n" +
    bySize
      .map((r) => `| ${r.bytes} | ${r.sealOpenUs.toFixed(1)} | ${r.mibPerSecond.toFixed(0)} | ${r.webCryptoUs.toFixed(1)} | ${r.plainUs.toFixed(1)} |`)
      .join("\n") +
    "\n\n| one sync | bytes | seal + open µs, Node | WebCrypto | plaintext µs | added by encryption (Node) µs |\n|---|---|---|---|---|---|\n" +
    perSync
      .map(
        (r) =>
          `| ${r.sync} | ${r.bytes} | ${r.sealOpenUs.toFixed(1)} | ${r.webCryptoUs.toFixed(1)} | ${r.plainUs.toFixed(1)} | ${(r.sealOpenUs - r.plainUs).toFixed(1)} |`,
      )
      .join("\n");
  return {
    description:
      "The record layer every message after the handshake goes through (replication/channel/record-layer.ts): AES-256-GCM, one key per direction, the sequence number as IV; in Node through its synchronous OpenSSL binding, in browsers through WebCrypto (asynchronous; in Node each WebCrypto call is a thread-pool round trip), both measured here. " +
      "Each figure is one record sealed by one side and opened by the other, in one process (both halves of the cost), median of hundreds of rounds; 'plaintext' is the copy the record framing makes anyway. " +
      "The per-sync rows add up the records one sync exchanges (the sizes the talk benchmark measured per sync), to set against a sync's round trip of several milliseconds.",
    table,
    data: { bySize, perSync },
  };
}
