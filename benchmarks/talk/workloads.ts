// The guest workloads of the talk benchmark: fio on the raw disk (/dev/vda) for block
// patterns, and on an ext4 file system (/dev/vdb mounted at /mnt) for file I/O, each one
// command whose output is fio's write bandwidth in KiB/s (terse v3, field 48).

export interface Workload {
  name: string;
  /** What it exercises, for the summary. */
  description: string;
  /** fio options (without output options). */
  fio: string;
}

/** fio options for direct synchronous writes to the raw disk. */
export const RAW = "--filename=/dev/vda --ioengine=psync --direct=1";

export const WORKLOADS: readonly Workload[] = [
  { name: "seq-4k", description: "sequential 4 KiB direct writes, fsync every 16", fio: `--name=seq4k ${RAW} --rw=write --bs=4k --size=2m --fsync=16` },
  { name: "rand-4k", description: "random 4 KiB direct writes", fio: `--name=rand4k ${RAW} --rw=randwrite --bs=4k --size=2m --randrepeat=1` },
  { name: "seq-64k", description: "sequential 64 KiB direct writes", fio: `--name=seq64k ${RAW} --rw=write --bs=64k --size=16m` },
  { name: "seq-1m", description: "sequential 1 MiB direct writes", fio: `--name=seq1m ${RAW} --rw=write --bs=1m --size=32m` },
  {
    name: "rand-4k-qd8",
    description: "random 4 KiB direct writes, libaio iodepth 8",
    fio: "--name=qd8 --filename=/dev/vda --ioengine=libaio --iodepth=8 --direct=1 --rw=randwrite --bs=4k --size=4m --randrepeat=1",
  },
  {
    name: "fsync-4k",
    description: "buffered 4 KiB writes, fsync after every write",
    fio: "--name=fsync4k --filename=/dev/vda --ioengine=psync --rw=write --bs=4k --size=512k --fsync=1",
  },
  {
    name: "ext4-files",
    description: "16 files of 256 KiB on ext4 in 16 KiB writes, fsync on close",
    fio: "--name=files --directory=/mnt --nrfiles=16 --filesize=256k --rw=write --bs=16k --ioengine=psync --fsync_on_close=1 --unlink=1",
  },
];

/** The guest command for a workload: prints the write bandwidth in KiB/s on one line. */
export function fioCommand(workload: Workload): string {
  return `fio ${workload.fio} --output-format=terse --terse-version=3 2>&1 | cut -d';' -f48`;
}

export function parseBandwidth(output: string, workload: Workload): number {
  const value = Number(output.trim().split("\n").at(-1));
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${workload.name}: fio gave no write bandwidth: ${JSON.stringify(output.slice(-300))}`);
  return value;
}
