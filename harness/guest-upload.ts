// A file into the guest in one go over its serial console. Typing data as commands
// is slow on a replicated guest: every echoed character is console output, and
// output starts a sync. Instead one command puts the terminal in raw mode without
// echo, says so, and reads exactly the file's base64 from the console; the data is
// then sent in bulk (v86 queues serial input without a limit) and nothing is echoed.
import type { Machine } from "../emulator/machine.ts";

/** The biggest file accepted (its base64 travels as one IPC message). */
export const MAX_UPLOAD_BYTES = 16 << 20;

export class UploadError extends Error {
  override name = "UploadError";
}

/**
 * Serial input reaches the guest as fast as it is sent: a big burst keeps its UART
 * interrupt busy until nothing else runs (a 260 KB burst hung the guest). So the
 * data goes in chunks, each sent when the guest says it is ready for it.
 */
const CHUNK_CHARS = 16 * 1024;

export async function uploadToGuest(machine: Machine, path: string, data: Uint8Array, options: { mode?: number; timeoutMs?: number } = {}): Promise<void> {
  if (!path.startsWith("/") || /['\n\r\0]/.test(path))
    throw new UploadError(`guest path ${JSON.stringify(path)}: expected an absolute path without quotes or newlines`);
  if (data.length > MAX_UPLOAD_BYTES) throw new UploadError(`${path}: ${data.length} bytes is more than ${MAX_UPLOAD_BYTES} (put big data on a disk image)`);
  const timeoutMs = options.timeoutMs ?? 120_000;
  const encoded = Buffer.from(data).toString("base64");
  const chunks = Math.max(1, Math.ceil(encoded.length / CHUNK_CHARS));
  const last = encoded.length - (chunks - 1) * CHUNK_CHARS;
  const id = Math.random().toString(36).slice(2, 10);
  const part = `'${path}.twinvm-upload'`;
  const chmod = options.mode === undefined ? "" : ` && chmod ${options.mode.toString(8)} ${part}`;
  // The guest says "twinvm-up-<id>-<i>" when it wants chunk i; in the echo of the
  // typed line the number is "$i", so the echo cannot match. `timeout` bounds each
  // read, so a lost chunk cannot leave the console in raw mode.
  const command =
    `mkdir -p "$(dirname '${path}')" && : > ${part}.b64 && stty raw -echo && i=0 && ` +
    `while [ $i -lt ${chunks} ]; do echo "twinvm-up-${id}-$i"; ` +
    `timeout 30 head -c $(( i < ${chunks - 1} ? ${CHUNK_CHARS} : ${last} )) >> ${part}.b64 || break; i=$((i+1)); done; ` +
    `stty sane; [ $i -eq ${chunks} ] && base64 -d ${part}.b64 > ${part} && rm ${part}.b64 && ` +
    `[ "$(wc -c < ${part})" -eq ${data.length} ]${chmod} && mv ${part} '${path}'`;
  const from = machine.console.position;
  const run = machine.exec(command, { timeoutMs });
  run.catch(() => undefined); // awaited below; a chunk wait may fail first
  let position = from;
  for (let i = 0; i < chunks; i++) {
    const wanted = machine.waitFor(new RegExp(`twinvm-up-${id}-${i}\\r?\\n`), { from: position, timeoutMs });
    wanted.catch(() => undefined);
    // The command failing (before or between chunks) ends the wait too.
    const first = await Promise.race([wanted.then((match) => match.end), run]);
    if (typeof first !== "number")
      throw new UploadError(`${path}: the upload stopped in the guest (exit ${first.exitCode}): ${first.output.trim().slice(-300)}`);
    position = first;
    machine.send(encoded.slice(i * CHUNK_CHARS, (i + 1) * CHUNK_CHARS));
  }
  const result = await run;
  if (result.exitCode !== 0) throw new UploadError(`${path}: the upload failed in the guest (exit ${result.exitCode}): ${result.output.trim().slice(-300)}`);
}
