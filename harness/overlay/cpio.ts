// A writer for the "newc" cpio format (the one Linux unpacks as an initramfs):
// per entry a 110-byte ASCII header ("070701" and 13 eight-digit hex fields), the
// NUL-terminated name, padding to 4 bytes, the data, padding to 4 bytes; then the
// TRAILER!!! entry. Written here because it is ~60 lines and the format is fixed
// (Linux's Documentation/driver-api/early-userspace/buffer-format.rst); owner,
// times and inode numbers are fixed so the same input gives the same bytes.

export type CpioEntry =
  | { type: "directory"; path: string; mode: number }
  | { type: "file"; path: string; mode: number; data: Uint8Array }
  | { type: "symlink"; path: string; target: string };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const MAGIC = "070701";
const TRAILER = "TRAILER!!!";
/** Field values are 32-bit. */
const MAX_FIELD = 0xffffffff;

const encoder = new TextEncoder();
const pad4 = (n: number) => (4 - (n % 4)) % 4;

function header(fields: { ino: number; mode: number; nlink: number; fileSize: number; nameSize: number }): Uint8Array {
  const values = [fields.ino, fields.mode, 0 /* uid */, 0 /* gid */, fields.nlink, 0 /* mtime */, fields.fileSize, 0, 0, 0, 0, fields.nameSize, 0 /* check */];
  for (const value of values) if (!Number.isInteger(value) || value < 0 || value > MAX_FIELD) throw new RangeError(`cpio: field value ${value} out of range`);
  return encoder.encode(MAGIC + values.map((value) => value.toString(16).toUpperCase().padStart(8, "0")).join(""));
}

/** A path inside the archive: relative, "/"-separated, no "." or ".." parts. */
function checkPath(path: string): string {
  const parts = path.split("/");
  if (path === "" || path.startsWith("/") || parts.some((part) => part === "" || part === "." || part === "..") || path.includes("\0")) {
    throw new Error(`cpio: bad entry path ${JSON.stringify(path)} (expected a relative path like "etc/app.conf")`);
  }
  return path;
}

/** The archive, entries in the order given (parents must come before their children). */
export function encodeCpio(entries: readonly CpioEntry[]): Uint8Array {
  const chunks: Uint8Array[] = [];
  let size = 0;
  const push = (bytes: Uint8Array) => {
    chunks.push(bytes);
    size += bytes.length;
    const padding = pad4(size);
    if (padding > 0) {
      chunks.push(new Uint8Array(padding));
      size += padding;
    }
  };
  const record = (ino: number, mode: number, nlink: number, name: string, data: Uint8Array) => {
    const nameBytes = encoder.encode(name + "\0");
    const head = header({ ino, mode, nlink, fileSize: data.length, nameSize: nameBytes.length });
    // The name is padded together with the header (110 + name), the data on its own.
    const headAndName = new Uint8Array(head.length + nameBytes.length);
    headAndName.set(head);
    headAndName.set(nameBytes, head.length);
    push(headAndName);
    if (data.length > 0) push(data);
  };
  entries.forEach((entry, i) => {
    const path = checkPath(entry.path);
    const ino = i + 1;
    if (entry.type === "directory") record(ino, S_IFDIR | (entry.mode & 0o7777), 2, path, new Uint8Array(0));
    else if (entry.type === "file") record(ino, S_IFREG | (entry.mode & 0o7777), 1, path, entry.data);
    else record(ino, S_IFLNK | 0o777, 1, path, encoder.encode(entry.target));
  });
  record(0, 0, 1, TRAILER, new Uint8Array(0));
  const out = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}
