// The demo's guest: its size, where the page finds its files, and the shell commands
// the demo types into it. Shared by the page, the workers and the build (snapshot).

export const DEMO_MEMORY_MIB = 128;
export const DEMO_DISK_BYTES = 32 << 20;

/** Paths relative to the page, as build.ts lays them out. */
export const GUEST_FILES = {
  wasm: "guest/v86.wasm",
  bios: "guest/bios.bin",
  kernel: "guest/vmlinuz",
  initrd: "guest/initramfs.cpio.gz",
  /** gzip: a booted guest with /dev/vda formatted and mounted on /mnt. */
  snapshot: "guest/booted.snap.gz",
  /** gzip: the disk image that goes with the snapshot. */
  disk: "guest/disk.img.gz",
} as const;

export type GuestFiles = { readonly [K in keyof typeof GUEST_FILES]: string };

/** Formats the demo disk and mounts it where the workloads write. */
export const FORMAT_COMMAND = "mke2fs -q -F /dev/vda && mkdir -p /mnt && mount /dev/vda /mnt && sync";

export type WorkloadName = "write-files" | "fio";

/** Typed into the active terminal, so the student sees exactly what runs. */
export const WORKLOADS: Record<WorkloadName, string> = {
  "write-files": 'for i in 1 2 3 4 5 6 7 8; do dd if=/dev/urandom of=/mnt/file$i bs=4k count=16 2>/dev/null; sync; done; echo "wrote" 8 files of 64 KiB',
  fio: "fio --name=demo --filename=/mnt/fio.dat --size=2M --bs=16k --rw=randwrite --direct=1 --ioengine=psync --fsync=4 --runtime=20 --group_reporting | grep -E 'IOPS|lat \\('",
};
