// The prebuilt snapshot the page starts from: the demo guest booted in Node, its disk
// formatted and mounted, saved with the disk image that goes with it. Built once and
// kept while its inputs (images, wasm, emulator sources, setup) stay the same.
import { createHash } from "node:crypto";
import { mkdir, readFile, readdir, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { gzip } from "node:zlib";
import { MemoryBackend } from "../../emulator/block/memory-backend.ts";
import { Machine } from "../../emulator/machine.ts";
import { defaultGuest, fileImage } from "../../emulator/node/images.ts";
import { virtioBlkDisk } from "../../emulator/virtio-blk/disk.ts";
import { DEMO_DISK_BYTES, DEMO_MEMORY_MIB, FORMAT_COMMAND } from "./web/demo-guest.ts";

const EMULATOR_SOURCES = new URL("../../emulator/", import.meta.url);

export interface SnapshotFiles {
  snapshot: string;
  disk: string;
}

/** Writes `<dir>/booted.snap.gz` and `<dir>/disk.img.gz` unless an up-to-date pair is there. */
export async function ensureGuestSnapshot(dir: string, wasmPath: string, log: (line: string) => void): Promise<SnapshotFiles & { built: boolean }> {
  const files = { snapshot: join(dir, "booted.snap.gz"), disk: join(dir, "disk.img.gz") };
  const keyFile = join(dir, "snapshot.key");
  const key = await inputsKey(wasmPath);
  if ((await readFile(keyFile, "utf8").catch(() => "")) === key) return { ...files, built: false };

  log("building the guest snapshot: booting the demo guest in Node once (15-40 s)...");
  const started = performance.now();
  const disk = new MemoryBackend(DEMO_DISK_BYTES);
  const machine = new Machine({
    ...defaultGuest(),
    wasm: fileImage(wasmPath),
    memoryMiB: DEMO_MEMORY_MIB,
    devices: [virtioBlkDisk({ backend: disk, id: "vda", keepBackendOpen: true })],
  });
  let snapshot: Uint8Array;
  try {
    await machine.boot();
    const format = await machine.exec(FORMAT_COMMAND, { timeoutMs: 60_000 });
    if (format.exitCode !== 0) throw new Error(`formatting the demo disk failed: ${format.output}`);
    snapshot = await machine.snapshot();
  } finally {
    await machine.destroy();
  }
  await mkdir(dir, { recursive: true });
  await writeAtomically(files.snapshot, await promisify(gzip)(snapshot, { level: 6 }));
  await writeAtomically(files.disk, await promisify(gzip)(disk.bytes, { level: 6 }));
  await writeFile(keyFile, key);
  log(`guest snapshot built in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  return { ...files, built: true };
}

/** Everything the snapshot depends on: the images, the wasm, the emulator's sources (device state layout), the setup. */
async function inputsKey(wasmPath: string): Promise<string> {
  const hash = createHash("sha256");
  const guest = defaultGuest();
  for (const source of [fileImage(wasmPath), guest.bios, guest.kernel, guest.initrd]) hash.update(await source.load());
  const sources = (await readdir(EMULATOR_SOURCES, { recursive: true })).filter((name) => name.endsWith(".ts") && !name.includes("test")).sort();
  for (const name of sources) hash.update(name).update(await readFile(new URL(name, EMULATOR_SOURCES)));
  hash.update(JSON.stringify({ DEMO_DISK_BYTES, DEMO_MEMORY_MIB, FORMAT_COMMAND }));
  return hash.digest("hex");
}

async function writeAtomically(path: string, bytes: Uint8Array): Promise<void> {
  await writeFile(`${path}.partial`, bytes);
  await rename(`${path}.partial`, path);
}
