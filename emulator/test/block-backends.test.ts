// Block backends: bounds, flush, read-only, and clear errors for bad files.
import { expect } from "chai";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BlockBackendError, type BlockBackend } from "../block/backend.ts";
import { MemoryBackend } from "../block/memory-backend.ts";
import { FileBackend } from "../node/file-backend.ts";

async function failure(promise: Promise<unknown>): Promise<BlockBackendError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, "expected a BlockBackendError").to.be.instanceOf(BlockBackendError);
  return error as BlockBackendError;
}

const dir = mkdtempSync(join(tmpdir(), "twinvm-backend-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const variants: [string, (size: number, readOnly?: boolean) => Promise<BlockBackend>][] = [
  ["MemoryBackend", async (size, readOnly) => new MemoryBackend(size, { readOnly })],
  [
    "FileBackend",
    async (size, readOnly) => {
      const path = join(dir, `disk-${Math.random().toString(36).slice(2)}.img`);
      await (await FileBackend.open(path, { createSizeBytes: size })).close();
      return FileBackend.open(path, { readOnly });
    },
  ],
];

for (const [name, create] of variants) {
  describe(name, () => {
    it("reads back what it wrote, anywhere on the disk", async () => {
      const disk = await create(64 * 512);
      expect(disk.sectorCount).to.equal(64);
      expect(disk.sizeBytes).to.equal(32768);
      const data = new Uint8Array(1024).map((_, i) => i % 251);
      await disk.write(63 - 1, data);
      await disk.flush();
      expect(await disk.read(62, 1024)).to.deep.equal(data);
      expect(await disk.read(0, 512)).to.deep.equal(new Uint8Array(512));
      await disk.close();
    });

    it("refuses requests past the end or not in whole sectors", async () => {
      const disk = await create(8 * 512);
      expect((await failure(disk.read(7, 1024))).code).to.equal("out-of-range");
      expect((await failure(disk.read(-1, 512))).code).to.equal("out-of-range");
      expect((await failure(disk.write(8, new Uint8Array(512)))).code).to.equal("out-of-range");
      expect((await failure(disk.read(0, 100))).code).to.equal("misaligned");
      expect((await failure(disk.write(0, new Uint8Array(513)))).code).to.equal("misaligned");
      await disk.close();
    });

    it("refuses writes when read-only, and everything once closed", async () => {
      const disk = await create(8 * 512, true);
      expect(disk.readOnly).to.equal(true);
      expect((await failure(disk.write(0, new Uint8Array(512)))).code).to.equal("read-only");
      expect(await disk.read(0, 512)).to.have.length(512);
      await disk.close();
      expect((await failure(disk.read(0, 512))).code).to.equal("closed");
      expect((await failure(disk.flush())).code).to.equal("closed");
    });
  });
}

describe("MemoryBackend sizes", () => {
  it("refuses a size that is not whole sectors", () => {
    expect(() => new MemoryBackend(1000)).to.throw(BlockBackendError, /multiple of 512/);
    expect(() => new MemoryBackend(0)).to.throw(BlockBackendError);
  });
});

describe("FileBackend files", () => {
  it("creates a sparse image and writes it in place", async () => {
    const path = join(dir, "sparse.img");
    const disk = await FileBackend.open(path, { createSizeBytes: 64 << 20 });
    await disk.write(2048, new Uint8Array(512).fill(0xab));
    await disk.flush();
    await disk.close();
    const stat = statSync(path);
    expect(stat.size).to.equal(64 << 20);
    expect(stat.blocks * 512).to.be.lessThan(1 << 20); // sparse: only what was written takes space
    expect(
      readFileSync(path)
        .subarray(2048 * 512, 2049 * 512)
        .every((b) => b === 0xab),
    ).to.equal(true);
  });

  it("names a missing file, an existing one it would overwrite, and a bad size", async () => {
    expect((await failure(FileBackend.open(join(dir, "nope.img")))).message).to.match(/nope\.img: no such file$/);
    writeFileSync(join(dir, "exists.img"), new Uint8Array(512));
    expect((await failure(FileBackend.open(join(dir, "exists.img"), { createSizeBytes: 1024 }))).message).to.match(/file exists/);
    writeFileSync(join(dir, "odd.img"), new Uint8Array(1000));
    expect((await failure(FileBackend.open(join(dir, "odd.img")))).message).to.match(/1000 bytes is not a positive multiple of 512/);
    expect((await failure(FileBackend.open(dir))).message).to.match(/is a directory/);
  });

  it("names an image it may not write", async function () {
    if (process.getuid?.() === 0) this.skip(); // root ignores file permissions
    const path = join(dir, "locked.img");
    writeFileSync(path, new Uint8Array(512));
    chmodSync(path, 0o444);
    expect((await failure(FileBackend.open(path))).message).to.match(/permission denied/);
    const readOnly = await FileBackend.open(path, { readOnly: true });
    expect(readOnly.readOnly).to.equal(true);
    await readOnly.close();
  });
});
