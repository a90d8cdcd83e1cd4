// `twinvm witness`: the arbiter for a pair on two hosts (run it on a third that both can
// reach). Each node, started with --witness ws://HOST:PORT, asks it before running the guest:
// a takeover needs the next epoch granted, an unprotected primary a valid lease. Runs until
// SIGINT or SIGTERM (exit 0).
import { SECRET_ENV } from "../../replication/node/secret.ts";
import { parseListen, secretFromOptions } from "./listener-options.ts";
import { TransportError } from "../../replication/transport/transport.ts";
import { parseOptions, UsageError, type Subcommand } from "./args.ts";

const USAGE = `Usage: twinvm witness --listen [HOST:]PORT --secret-file FILE [options]

The arbiter both nodes of a pair ask before they run the guest, so that a cut replication
link with both nodes alive never leaves two guests running: a secondary takes over only once
this grants it the next epoch (refused while the primary holds its lease: it is alive), and a
primary without a secondary lets its guest's writes and output out only while it holds a
lease here. Start both nodes with --witness and the URL printed. Nodes prove the pair's
secret (and are named by the names they give: --name).

Options:
  --listen [HOST:]PORT  where nodes connect (host default 127.0.0.1; port 0 picks a free one)
  --allow-non-loopback  allow a HOST that is not loopback (needed for nodes on other hosts)
  --secret-file FILE    the pair's shared secret (or set ${SECRET_ENV})
  --lease-ms MS         how long a granted lease lasts (default 600)
  --json                JSON lines on stdout: "listening", then each answer
  -h, --help            show this help
`;

export const witnessCommand: Subcommand = {
  name: "witness",
  summary: "the arbiter a pair on two hosts asks before running the guest (no split brain)",
  usage: USAGE,
  async run(argv) {
    const values = parseOptions(argv, {
      listen: { type: "string" },
      "allow-non-loopback": { type: "boolean" },
      "secret-file": { type: "string" },
      "lease-ms": { type: "string" },
      json: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    });
    if (values.help) {
      process.stdout.write(USAGE);
      return 0;
    }
    const listen = parseListen(values.listen, values["allow-non-loopback"], "to let nodes on other hosts ask");
    const leaseMs = values["lease-ms"] === undefined ? undefined : Number(values["lease-ms"]);
    if (leaseMs !== undefined && !(Number.isInteger(leaseMs) && leaseMs >= 50 && leaseMs <= 60_000)) {
      throw new UsageError(`--lease-ms: expected a whole number of milliseconds from 50 to 60000, got ${JSON.stringify(values["lease-ms"])}`);
    }
    const secret = await secretFromOptions(values["secret-file"]);
    const json = values.json === true;
    const say = (line: string) => (json ? undefined : process.stderr.write(`twinvm: ${line}\n`));
    const { startWitness } = await import("../witness/witness-server.ts");
    let server;
    try {
      server = await startWitness(
        {
          secret,
          listen: { host: listen.host, port: listen.port, allowNonLoopback: values["allow-non-loopback"] === true },
          ...(leaseMs !== undefined && { leaseMs }),
        },
        (event) => {
          if (json) process.stdout.write(JSON.stringify(event) + "\n");
          else if (event.type === "witness") say(`${event.granted ? "granted" : "refused"} ${event.node}'s ${event.op} of epoch ${event.epoch}`);
          else say(`${event.type}: ${event.peer}: ${event.reason}`);
        },
      );
    } catch (error) {
      if (error instanceof TransportError && error.code === "listen-failed") throw new UsageError(`--listen: ${error.message}`);
      throw error;
    }
    if (json) process.stdout.write(JSON.stringify({ type: "listening", url: server.url }) + "\n");
    else say(`witness listening on ${server.url}; start both nodes with --witness ${server.url}`);
    return new Promise<number>((resolve) => {
      const stop = (signal: NodeJS.Signals) => {
        say(`stopped (${signal}); epoch ${server.core.epoch} held by ${server.core.holder ?? "nobody"}`);
        void server.close().then(() => resolve(0));
      };
      for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.once(signal, stop);
    });
  },
};
