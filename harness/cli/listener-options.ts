// What the commands that listen for nodes (twinvm gateway, twinvm witness) share: where to
// listen, loopback unless told otherwise, and the pair's secret from a file or the environment.
import { loadSecret, SECRET_ENV } from "../../replication/node/secret.ts";
import { isLoopbackHost } from "../../replication/node/ws-transport.ts";
import { existingFile, parseHostPort, requireOption, UsageError } from "./args.ts";

/** `--listen [HOST:]PORT`, refused off loopback without `--allow-non-loopback`; `why` ends the refusal ("to let ..."). */
export function parseListen(listen: string | undefined, allowNonLoopback: boolean | undefined, why: string): { host: string; port: number } {
  const parsed = parseHostPort("--listen", requireOption("--listen", listen), "127.0.0.1");
  if (!isLoopbackHost(parsed.host) && !allowNonLoopback) {
    throw new UsageError(`--listen: ${parsed.host} is not a loopback address; add --allow-non-loopback ${why}`);
  }
  return parsed;
}

/** The secret from `--secret-file`, or else from the environment; one of them is required. */
export async function secretFromOptions(secretFile: string | undefined): Promise<Uint8Array> {
  const file = secretFile === undefined ? undefined : existingFile("--secret-file", secretFile);
  if (file === undefined && !process.env[SECRET_ENV]) requireOption("--secret-file", undefined, `is required (or set ${SECRET_ENV})`);
  return loadSecret(file === undefined ? {} : { file });
}
