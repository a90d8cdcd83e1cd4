// `twinvm gateway`: the guest's network for a pair whose nodes run elsewhere (two hosts:
// run it on a third). passt is the TCP/IP stack; the node that runs the guest attaches
// over the network link; host ports are forwarded to the guest. Runs until SIGINT or
// SIGTERM (exit 0), or until passt dies (exit 1: its TCP flows are gone).
import type { ForwardSpec } from "../network/forwards.ts";
import { ForwardError, parseForward } from "../network/forwards.ts";
import type { Gateway, GatewayEvent, GatewayStatus } from "../network/gateway.ts";
import { SECRET_ENV } from "../../replication/node/secret.ts";
import { parseListen, secretFromOptions } from "./listener-options.ts";
import { TransportError } from "../../replication/transport/transport.ts";
import { CliError, parseOptions, UsageError, type Subcommand } from "./args.ts";
import { formatBytes } from "./progress.ts";

const USAGE = `Usage: twinvm gateway --listen [HOST:]PORT --secret-file FILE [--forward [HOST:]PORT:GUESTPORT]... [options]

The guest's network, kept outside either node so that its TCP connections survive a
failover: passt (Debian package passt) is the TCP/IP stack and owns the host's sockets,
and the node that runs the guest attaches here (authenticated and encrypted with the
pair's secret; after a takeover the new primary attaches at a higher epoch and the old one
is refused). The guest is 10.0.2.15/24 with gateway 10.0.2.2.

Options:
  --listen [HOST:]PORT  where nodes attach (host default 127.0.0.1; port 0 picks a free one)
  --allow-non-loopback  allow a HOST that is not loopback (the link carries the guest's
                        traffic; it is encrypted, but keep it off open networks)
  --secret-file FILE    the pair's shared secret (or set ${SECRET_ENV})
  --forward [HOST:]PORT:GUESTPORT
                        forward a host TCP port to a guest port (repeat; HOST default
                        127.0.0.1, an IPv4 address; PORT 0 picks a free one, printed at start)
  --dns                 give the guest a DNS server (10.0.2.3) that forwards to this host's
                        resolver (default: none)
  --witness             also be the pair's arbiter: nodes started with --witness and this URL
                        ask here before running the guest (see \`twinvm witness\`)
  --json                JSON lines on stdout: "listening", then every event, then "stopped"
  --no-status-line      do not draw the live status row (drawn only on a terminal)
  -h, --help            show this help
`;

const STATUS_REFRESH_MS = 1000;

export const gatewayCommand: Subcommand = {
  name: "gateway",
  summary: "the guest's network (passt) outside both nodes, so TCP clients survive a failover",
  usage: USAGE,
  async run(argv) {
    const values = parseOptions(argv, {
      listen: { type: "string" },
      "allow-non-loopback": { type: "boolean" },
      "secret-file": { type: "string" },
      forward: { type: "string", multiple: true },
      dns: { type: "boolean" },
      witness: { type: "boolean" },
      json: { type: "boolean" },
      "no-status-line": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    });
    if (values.help) {
      process.stdout.write(USAGE);
      return 0;
    }
    const listen = parseListen(values.listen, values["allow-non-loopback"], "to let nodes attach over a network");
    const forwards: ForwardSpec[] = (values.forward ?? []).map((text) => {
      try {
        return parseForward(text);
      } catch (error) {
        throw new UsageError(`--${(error as Error).message}`); // "forward \"X\": ..."
      }
    });
    const secret = await secretFromOptions(values["secret-file"]);

    // Loaded only now: --help and option errors stay quick.
    const { startGateway } = await import("../network/gateway.ts");
    const { PasstError } = await import("../network/passt.ts");
    let gateway: Gateway;
    try {
      gateway = await startGateway({
        forwards,
        secret,
        listen: { host: listen.host, port: listen.port, allowNonLoopback: values["allow-non-loopback"] === true },
        passt: { dnsForward: values.dns === true },
        witness: values.witness === true,
      });
    } catch (error) {
      // A forward that cannot be had (a port in use, above all) is the command line's fault: exit 2.
      if (error instanceof ForwardError) {
        process.stderr.write(`twinvm gateway: ${error.message}\n`);
        return 2;
      }
      if (error instanceof TransportError && error.code === "listen-failed") {
        process.stderr.write(`twinvm gateway: --listen: ${error.message}\n`);
        return 2;
      }
      if (error instanceof PasstError) throw new CliError(error.message);
      throw error;
    }
    return serve(gateway, values.json === true, values["no-status-line"] !== true);
  },
};

function serve(gateway: Gateway, json: boolean, statusLine: boolean): Promise<number> {
  const row = statusLine && !json && process.stderr.isTTY === true ? new StatusRow() : undefined;
  const say = (text: string) => (row ? row.print(`twinvm: ${text}`) : process.stderr.write(`twinvm: ${text}\n`));
  const emit = (event: object) => process.stdout.write(JSON.stringify(event) + "\n");

  if (json) emit({ type: "listening", url: gateway.url, forwards: gateway.forwards, passtPid: gateway.passtPid });
  else {
    say(`gateway listening on ${gateway.url} (passt pid ${gateway.passtPid}); the guest is 10.0.2.15, its gateway 10.0.2.2`);
    for (const f of gateway.forwards) say(`forwarding ${f.host}:${f.port} -> guest port ${f.guestPort}`);
    if (gateway.forwards.length === 0) say("no ports forwarded (--forward [HOST:]PORT:GUESTPORT)");
  }

  return new Promise<number>((resolve) => {
    let finished = false;
    const finish = async (code: number, why: string) => {
      if (finished) return;
      finished = true;
      clearInterval(refresh);
      for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.off(signal, onSignal);
      const counters = gateway.counters();
      await gateway.close();
      row?.stop();
      if (json) emit({ type: "stopped", reason: why, counters });
      else say(`stopped (${why})`);
      resolve(code);
    };
    gateway.onEvent((event) => {
      if (json) emit(event);
      else say(describe(event));
      if (event.type === "stack-exited") void finish(1, "passt exited: the guest's TCP connections are gone");
    });
    const onSignal = (signal: NodeJS.Signals) => void finish(0, signal);
    for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(signal, onSignal);
    const refresh = setInterval(() => row?.draw(statusText(gateway.counters())), STATUS_REFRESH_MS);
  });
}

export function describe(event: GatewayEvent): string {
  switch (event.type) {
    case "attached":
      return (
        `node at epoch ${event.epoch} attached` +
        (event.replacedEpoch !== undefined ? ` (replacing epoch ${event.replacedEpoch})` : "") +
        `; ${event.replay} logged frame(s) given again` +
        (event.missing > 0 ? `, ${event.missing} no longer held` : "")
      );
    case "detached":
      return `node at epoch ${event.epoch} detached: ${event.reason}; frames are logged until a node attaches`;
    case "refused":
      return `refused a node at epoch ${event.epoch}: the gateway serves epoch ${event.currentEpoch}`;
    case "unknown-ingress-id":
      return `node at epoch ${event.epoch} has seen frame ${event.lastIngressId}, which this gateway never gave out (last ${event.lastId}); it gets every logged frame`;
    case "link-refused":
      return `refused a connection from ${event.peer}: ${event.reason}`;
    case "link-error":
      return `ended the link of ${event.peer}: ${event.reason}`;
    case "stack-exited":
      return `${event.reason}`;
    case "witness":
      return `witness: ${event.granted ? "granted" : "refused"} ${event.node}'s ${event.op} of epoch ${event.epoch}`;
  }
}

export function statusText(c: GatewayStatus): string {
  const node = c.nodes.current ? `node epoch ${c.nodes.current.epoch}` : "no node";
  const dropped =
    Object.values(c.ingress.dropped).reduce((a, b) => a + b, 0) +
    Object.values(c.egress.dropped).reduce((a, b) => a + b, 0) +
    c.stack.dropped.oversized +
    c.stack.dropped.malformed;
  return [
    `gateway ${c.stack.state === "running" ? "up" : "STACK DOWN"}`,
    node,
    `to guest ${c.ingress.frames} frames ${formatBytes(c.ingress.bytes)}`,
    `from guest ${c.egress.frames} frames ${formatBytes(c.egress.bytes)}`,
    `log ${c.log.frames}`,
    `dropped ${dropped}`,
  ].join(" | ");
}

/** One status row at the bottom of a terminal, with event lines printed above it. */
class StatusRow {
  #text = "";

  draw(text: string): void {
    this.#text = text;
    process.stderr.write(`\r\x1b[2K${text.slice(0, Math.max(1, (process.stderr.columns ?? 80) - 1))}`);
  }

  print(line: string): void {
    process.stderr.write(`\r\x1b[2K${line}\n`);
    if (this.#text !== "") this.draw(this.#text);
  }

  stop(): void {
    process.stderr.write("\r\x1b[2K");
  }
}
