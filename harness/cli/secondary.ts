// `twinvm secondary`: listens for a primary, keeps the replica, and takes over
// when the primary is lost (or on `twinvm promote`); from then on the guest's
// console is on this terminal.
import { SECRET_ENV } from "../../replication/node/secret.ts";
import { isLoopbackHost } from "../../replication/node/ws-transport.ts";
import { existingFile, parseHostPort, parseOptions, parseWsUrl, requireOption, UsageError, type Subcommand } from "./args.ts";
import { GATEWAY_HELP, WITNESS_HELP, NODE_HELP, NODE_OPTIONS, sharedNodeConfig, startNode } from "./node-options.ts";
import { runNodeSession, singleNodeSource } from "./node-session.ts";
import { GUEST_HELP, GUEST_OPTIONS, guestArchive } from "./guest-options.ts";
import { printUsage } from "./primary.ts";

const USAGE = `Usage: twinvm secondary --listen [HOST:]PORT --secret-file FILE [--disk FILE]... [options]

Waits for a primary (\`twinvm primary --connect ws://HOST:PORT\`), keeps a replica of its
guest, and takes over when the primary is lost; the console then continues here.

Options:
  --listen [HOST:]PORT  where to listen (host default 127.0.0.1; port 0 picks a free one)
  --allow-non-loopback  allow a HOST that is not loopback (replication carries guest memory;
                        it is authenticated and encrypted with the secret, but anyone who
                        holds the secret controls the guest: keep the port off open networks)
  --disk FILE           the replica's disk image (repeat; the primary's sizes, one for one)
  --secret-file FILE    the shared secret (or set ${SECRET_ENV})
  --no-takeover         do not take over by itself; wait for \`twinvm promote\`
  --name NAME           control socket name (default secondary)
  --json                JSON lines on stdout (state changes, console output after a takeover)
${GATEWAY_HELP}
${WITNESS_HELP}
${GUEST_HELP}
                        (the same as the primary's: the secondary runs the guest after a takeover)
${NODE_HELP}

Keys: Ctrl-] p promote (take over now), Ctrl-] s status, Ctrl-] q quit, Ctrl-] ? help.
`;

export const secondaryCommand: Subcommand = {
  name: "secondary",
  summary: "keep a replica of a primary's guest and take over when it dies",
  usage: USAGE,
  async run(argv) {
    const values = parseOptions(argv, {
      ...NODE_OPTIONS,
      listen: { type: "string" },
      "allow-non-loopback": { type: "boolean" },
      disk: { type: "string", multiple: true },
      "secret-file": { type: "string" },
      "no-takeover": { type: "boolean" },
      gateway: { type: "string" },
      witness: { type: "string" },
      name: { type: "string" },
      json: { type: "boolean" },
      ...GUEST_OPTIONS,
    });
    if (values.help) return printUsage(USAGE);
    const listen = parseHostPort("--listen", requireOption("--listen", values.listen), "127.0.0.1");
    if (!isLoopbackHost(listen.host) && !values["allow-non-loopback"]) {
      throw new UsageError(`--listen: ${listen.host} is not a loopback address; add --allow-non-loopback to expose replication on a network`);
    }
    const disks = (values.disk ?? []).map((path) => existingFile("--disk", path));
    const secretFile = values["secret-file"] === undefined ? undefined : existingFile("--secret-file", values["secret-file"]);
    if (secretFile === undefined && !process.env[SECRET_ENV]) requireOption("--secret-file", undefined, `is required (or set ${SECRET_ENV})`);

    const shared = sharedNodeConfig(values);
    const guest = await guestArchive(values, shared.memoryMiB);
    try {
      const { dispose: _, ...guestConfig } = guest;
      const secondary = startNode(
        {
          role: "secondary",
          mode: "logging-replay", // the primary announces its mode at the initial sync
          disks,
          secretFile,
          listenHost: listen.host,
          listenPort: listen.port,
          ...(values.gateway !== undefined && { gateway: parseWsUrl("--gateway", values.gateway) }),
          ...(values.witness !== undefined && { witness: parseWsUrl("--witness", values.witness) }),
          allowNonLoopback: values["allow-non-loopback"] === true,
          autoFailover: !values["no-takeover"],
          name: values.name ?? "secondary",
          ...shared,
          ...guestConfig,
        },
        values.verbose,
      );
      const url = await secondary.listeningUrl(60_000);
      if (values.json) process.stdout.write(JSON.stringify({ type: "listening", url }) + "\n");
      else process.stderr.write(`twinvm: secondary listening on ${url}; start the primary with --connect ${url}\n`);
      return await runNodeSession({
        source: singleNodeSource("secondary", secondary, () => secondary.states.includes("active")),
        extraCommands: [
          {
            key: "p",
            help: "promote: take over now",
            run: () =>
              void secondary.request({ type: "promote" }).catch((e: unknown) => process.stderr.write(`\r\ntwinvm: promote: ${(e as Error).message}\r\n`)),
          },
        ],
        statusLine: !values["no-status-line"],
        json: values.json === true,
      });
    } finally {
      guest.dispose();
    }
  },
};
