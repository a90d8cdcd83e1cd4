// Files out of the guest over its serial console, as base64 in blocks that the
// console transcript holds. (Into the guest: guest-upload.ts, in one piece.) Meant
// for results and logs; read big data from a disk image on the host.

/** Anything with a guest shell: a booted Machine, a pair, a node. */
export interface GuestShell {
  exec(command: string, options?: { timeoutMs?: number }): Promise<{ output: string; exitCode: number }>;
}

export class GuestFileError extends Error {
  override name = "GuestFileError";
}

/** Bytes read per command (a multiple of 3: base64 pieces concatenate). */
const READ_BLOCK_BYTES = 48 * 1024;
const STEP_TIMEOUT_MS = 30_000;

/** Guest paths are quoted for the shell; a path with a quote or a newline is refused. */
function quoted(path: string): string {
  if (!path.startsWith("/") || /['\n\r\0]/.test(path))
    throw new GuestFileError(`guest path ${JSON.stringify(path)}: expected an absolute path without quotes or newlines`);
  return `'${path}'`;
}

async function run(shell: GuestShell, command: string, what: string, timeoutMs = STEP_TIMEOUT_MS): Promise<string> {
  const result = await shell.exec(command, { timeoutMs });
  if (result.exitCode !== 0) throw new GuestFileError(`${what} (exit ${result.exitCode}): ${result.output.trim().slice(0, 500)}`);
  return result.output;
}

/** Reads `path` from the guest. */
export async function readGuestFile(shell: GuestShell, path: string): Promise<Uint8Array> {
  const source = quoted(path);
  const sizeOutput = await run(shell, `echo "SIZE $(wc -c < ${source})"`, `cannot read ${path}`);
  const size = Number(/SIZE (\d+)/.exec(sizeOutput)?.[1]);
  if (!Number.isSafeInteger(size)) throw new GuestFileError(`cannot read ${path}: ${sizeOutput.trim().slice(0, 300)}`);
  const out = new Uint8Array(size);
  for (let block = 0; block * READ_BLOCK_BYTES < size; block++) {
    const output = await run(shell, `dd if=${source} bs=${READ_BLOCK_BYTES} skip=${block} count=1 2>/dev/null | base64`, `cannot read ${path}`);
    const bytes = Buffer.from(output.replace(/\s+/g, ""), "base64");
    const offset = block * READ_BLOCK_BYTES;
    if (bytes.length !== Math.min(READ_BLOCK_BYTES, size - offset))
      throw new GuestFileError(`cannot read ${path}: block ${block} came back with ${bytes.length} bytes (did the file change while it was read?)`);
    out.set(bytes, offset);
  }
  return out;
}
