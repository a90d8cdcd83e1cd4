// `twinvm witness` in-process: an arbiter's witness on the network link's listener (loopback
// unless allowed otherwise; nodes prove the pair's secret), for a pair on two hosts. The two
// nodes' `--witness ws://HOST:PORT` ask it before running the guest.
import { WitnessCore, type WitnessCore as Core } from "../../replication/arbiter/witness.ts";
import { MIN_SECRET_BYTES } from "../../replication/protocol/limits.ts";
import { startLinkServer, type LinkServerEvent, type LinkServerOptions } from "../network/link-server.ts";

export interface WitnessServer {
  readonly url: string;
  readonly core: Core;
  close(): Promise<void>;
}

export async function startWitness(
  options: { secret: Uint8Array; listen?: LinkServerOptions["listen"]; leaseMs?: number },
  onEvent: (event: LinkServerEvent) => void = () => undefined,
): Promise<WitnessServer> {
  if (options.secret.length < MIN_SECRET_BYTES) throw new RangeError(`the secret is ${options.secret.length} bytes, at least ${MIN_SECRET_BYTES} are required`);
  const core = new WitnessCore(options.leaseMs === undefined ? {} : { leaseMs: options.leaseMs });
  const server = await startLinkServer(undefined, { secret: options.secret, witness: core, ...(options.listen && { listen: options.listen }) }, onEvent);
  return { url: server.url, core, close: () => server.close() };
}
