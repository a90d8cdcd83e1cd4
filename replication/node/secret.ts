// Loads the replication shared secret for Node processes: from TWINVM_SECRET, or
// from a file (whose surrounding whitespace is ignored, so `echo` output works).
import { readFile, stat } from "node:fs/promises";
import { MIN_SECRET_BYTES } from "../protocol/limits.ts";

export const SECRET_ENV = "TWINVM_SECRET";

export class SecretError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SecretError";
  }
}

export interface SecretSource {
  /** A file holding the secret; wins over the environment when given. */
  file?: string;
  /** Defaults to process.env. */
  env?: Record<string, string | undefined>;
}

export async function loadSecret(source: SecretSource = {}): Promise<Uint8Array> {
  if (source.file !== undefined) {
    let text: string;
    try {
      // Like ssh with a private key: a secret others can read is not a secret.
      const { mode } = await stat(source.file);
      if ((mode & 0o077) !== 0 && process.platform !== "win32") {
        throw new SecretError(`replication secret file ${source.file}: readable or writable by others (mode ${(mode & 0o777).toString(8)}); chmod 600 it`);
      }
      text = await readFile(source.file, "utf8");
    } catch (error) {
      if (error instanceof SecretError) throw error;
      const code = (error as NodeJS.ErrnoException).code;
      const why = code === "ENOENT" ? "no such file" : code === "EACCES" ? "permission denied" : code === "EISDIR" ? "is a directory" : String(error);
      throw new SecretError(`replication secret file ${source.file}: ${why}`, { cause: error });
    }
    return checked(text.trim(), `replication secret file ${source.file}`);
  }
  const value = (source.env ?? process.env)[SECRET_ENV];
  if (value === undefined || value === "") {
    throw new SecretError(`no replication secret: set ${SECRET_ENV} or give a secret file (at least ${MIN_SECRET_BYTES} bytes)`);
  }
  return checked(value, SECRET_ENV);
}

function checked(text: string, where: string): Uint8Array {
  const bytes = new TextEncoder().encode(text);
  if (bytes.length < MIN_SECRET_BYTES) {
    throw new SecretError(`${where}: secret is ${bytes.length} bytes, at least ${MIN_SECRET_BYTES} are required`);
  }
  return bytes;
}
