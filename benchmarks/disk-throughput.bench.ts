// Guest disk throughput with fio: our virtio-blk against v86's IDE disk, in the
// same guest and the same run. Both disks are held in host memory (MemoryBackend
// and v86's hda buffer), so the numbers compare the device paths, not host storage.
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { bytesImage } from "../emulator/config.ts";
import { MemoryBackend } from "../emulator/block/memory-backend.ts";
import { Machine } from "../emulator/machine.ts";
import { DEFAULT_IMAGES_DIR, defaultGuest } from "../emulator/node/images.ts";
import { virtioBlkDisk } from "../emulator/virtio-blk/disk.ts";
import type { Benchmark } from "./run.ts";
import { median } from "./stats.ts";

const DISK_BYTES = 64 << 20;
const REPEATS = 3;
/** The default guest has no ATA drivers: these modules (from images/.build) go into an extra initramfs segment. */
const ATA_MODULES = [
  "scsi_common",
  "scsi_mod",
  "libata",
  "ata_piix",
  "crct10dif_common",
  "crct10dif_generic",
  "crc-t10dif",
  "crc64",
  "crc64_rocksoft_generic",
  "crc64-rocksoft",
  "t10-pi",
  "sd_mod",
];

const JOBS = [
  { name: "seq-write-4k", args: "--rw=write --bs=4k --size=16m --end_fsync=1" },
  { name: "seq-write-64k", args: "--rw=write --bs=64k --size=16m --end_fsync=1" },
  { name: "rand-write-4k", args: "--rw=randwrite --bs=4k --size=16m --io_size=4m --fsync=32 --randrepeat=1" },
] as const;

const DEVICES = [
  { name: "virtio-blk", path: "/dev/vda" },
  { name: "v86 IDE", path: "/dev/sda" },
] as const;

type Device = (typeof DEVICES)[number]["name"];

const benchmark: Benchmark = async ({ log }) => {
  const manifest = JSON.parse(readFileSync(join(DEFAULT_IMAGES_DIR, "manifest.json"), "utf8")) as { kernel_release: string };
  const initrd = withExtraModules(readFileSync(join(DEFAULT_IMAGES_DIR, "initramfs.cpio.gz")), manifest.kernel_release);
  const machine = new Machine({
    ...defaultGuest(),
    initrd: bytesImage("initramfs + ATA modules", initrd),
    devices: [virtioBlkDisk({ backend: new MemoryBackend(DISK_BYTES), id: "vda" })],
    ideDisk: new Uint8Array(DISK_BYTES),
  });
  try {
    log(`booted in ${Math.round((await machine.boot()).bootMs)} ms`);
    const load = ATA_MODULES.map((m) => `insmod /lib/modules/${manifest.kernel_release}/extra/${m}.ko`).join(" && ");
    await guest(machine, `${load} && for i in $(seq 100); do [ -b /dev/sda ] && break; sleep 0.1; done; [ -b /dev/sda ] && [ -b /dev/vda ]`);

    const samples: Record<string, Record<Device, number[]>> = {};
    // Round 0 warms up (guest I/O gets 2-5x faster within a boot); rounds alternate device order.
    for (let round = 0; round <= REPEATS; round++) {
      for (const job of JOBS) {
        const order = round % 2 === 0 ? DEVICES : [...DEVICES].reverse();
        for (const device of order) {
          const mibps = await fio(machine, device.path, job.args);
          log(`round ${round} ${job.name} ${device.name}: ${mibps.toFixed(2)} MiB/s${round === 0 ? " (warm-up)" : ""}`);
          if (round === 0) continue;
          (samples[job.name] ??= { "virtio-blk": [], "v86 IDE": [] })[device.name].push(mibps);
        }
      }
    }

    const rows = JOBS.map((job) => {
      const virtio = median(samples[job.name]!["virtio-blk"]);
      const ide = median(samples[job.name]!["v86 IDE"]);
      return { job: job.name, fio: job.args, virtioMiBps: virtio, ideMiBps: ide, ratio: virtio / ide, samples: samples[job.name]! };
    });
    const table =
      "| fio job (psync, raw device) | virtio-blk MiB/s | v86 IDE MiB/s | virtio / IDE |\n|---|---:|---:|---:|\n" +
      rows.map((r) => `| ${r.job}: \`${r.fio}\` | ${r.virtioMiBps.toFixed(2)} | ${r.ideMiBps.toFixed(2)} | ${r.ratio.toFixed(2)}x |`).join("\n");
    return {
      description:
        `fio 3.33 in the default guest (128 MiB, one boot) writing to the raw block device: /dev/vda on our ` +
        `virtio-blk (MemoryBackend) and /dev/sda on v86's IDE disk (hda buffer, Linux ata_piix), both ${DISK_BYTES >> 20} MiB ` +
        `in host memory. psync engine, buffered writes; sequential jobs fsync at the end (end_fsync=1), the random job every ` +
        `32 writes. Figures are fio's write bandwidth, the median of ${REPEATS} runs after one warm-up round, devices ` +
        `alternating in order each round.`,
      table,
      data: { diskBytes: DISK_BYTES, repeats: REPEATS, rows },
    };
  } finally {
    await machine.destroy();
  }
};

export default benchmark;

async function guest(machine: Machine, command: string): Promise<string> {
  const { output, exitCode } = await machine.exec(command, { timeoutMs: 300_000 });
  if (exitCode !== 0) throw new Error(`guest command failed (${exitCode}): ${command}\n${output}`);
  return output;
}

/** Runs one fio job and returns its write bandwidth in MiB/s (terse v3: field 48 is write KiB/s). */
async function fio(machine: Machine, device: string, args: string): Promise<number> {
  const out = await guest(machine, `fio --name=j --filename=${device} --ioengine=psync ${args} --output-format=terse --terse-version=3 | cut -d';' -f48`);
  const kibps = Number(out.trim());
  if (!Number.isFinite(kibps) || kibps <= 0) throw new Error(`fio on ${device}: unexpected output ${JSON.stringify(out)}`);
  return kibps / 1024;
}

/**
 * The default initramfs plus a second, gzipped cpio segment holding the ATA
 * modules (the kernel unpacks concatenated segments; a new one starts 4-aligned).
 */
function withExtraModules(initramfs: Uint8Array, kernelRelease: string): Uint8Array<ArrayBuffer> {
  const modulesDir = join(DEFAULT_IMAGES_DIR, ".build/pkgs", `linux-image-${kernelRelease}`, "lib/modules", kernelRelease, "kernel");
  const found = new Map<string, string>();
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (entry.isDirectory()) walk(join(dir, entry.name));
      else if (entry.name.endsWith(".ko")) found.set(entry.name.slice(0, -3), join(dir, entry.name));
    }
  };
  try {
    walk(modulesDir);
  } catch (error) {
    throw new Error(`the IDE comparison needs the kernel's ATA modules from ${modulesDir}; run images/build.sh first`, { cause: error });
  }
  const files = ATA_MODULES.map((name) => {
    const path = found.get(name);
    if (path === undefined) throw new Error(`module ${name}.ko not found under ${modulesDir}`);
    return { name: `lib/modules/${kernelRelease}/extra/${name}.ko`, data: readFileSync(path) };
  });
  const segment = gzipSync(newcArchive([{ name: `lib/modules/${kernelRelease}/extra`, data: null }, ...files]));
  const padded = Math.ceil(initramfs.length / 4) * 4;
  const out = new Uint8Array(padded + segment.length);
  out.set(initramfs, 0);
  out.set(segment, padded);
  return out;
}

/** A cpio "newc" archive of directories (data null) and regular files. */
function newcArchive(entries: { name: string; data: Uint8Array | null }[]): Uint8Array {
  const parts: Uint8Array[] = [];
  let length = 0;
  const push = (bytes: Uint8Array) => {
    parts.push(bytes);
    length += bytes.length;
    const pad = (4 - (length % 4)) % 4;
    if (pad > 0) {
      parts.push(new Uint8Array(pad));
      length += pad;
    }
  };
  const all = [...entries, { name: "TRAILER!!!", data: new Uint8Array(0) }];
  all.forEach(({ name, data }, i) => {
    const isDir = data === null;
    const mode = isDir ? 0o040755 : name === "TRAILER!!!" ? 0 : 0o100644;
    const fields = [i + 1, mode, 0, 0, isDir ? 2 : 1, 1700000000, data?.length ?? 0, 0, 0, 0, 0, name.length + 1, 0];
    const header = "070701" + fields.map((f) => f.toString(16).padStart(8, "0")).join("");
    push(new TextEncoder().encode(header + name + "\0"));
    if (data !== null && data.length > 0) push(data);
  });
  const out = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}
