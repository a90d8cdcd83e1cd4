// Host-side checks of a guest's disk image in memory: e2fsck on a temporary copy.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { fsckImage } from "../../harness/campaign/host-disk-check.ts";

/** Fails the test with e2fsck's report unless `image` is a clean ext2/3/4 file system (`e2fsck -fn`). */
export async function expectCleanFileSystem(image: Uint8Array): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "twinvm-fsck-"));
  try {
    const path = join(dir, "disk.img");
    await writeFile(path, image);
    const verdict = await fsckImage(path);
    expect(verdict.clean, verdict.detail).to.equal(true);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
