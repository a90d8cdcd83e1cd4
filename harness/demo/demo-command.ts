// `twinvm demo`: builds the browser demo (unless told not to), serves it on loopback
// and prints the URL; Ctrl-C stops the server.
import { access } from "node:fs/promises";
import { join } from "node:path";
import { CliError, UsageError, parseOptions, parsePort, type Subcommand } from "../cli/args.ts";
import { printUsage } from "../cli/primary.ts";
import { DEFAULT_OUT_DIR, buildDemo } from "./build.ts";
import { serveDemo } from "./server.ts";

export const DEFAULT_DEMO_PORT = 8086;
const LOOPBACK = new Set(["127.0.0.1", "localhost", "::1"]);

const USAGE = `Usage: twinvm demo [options]

Serves the teaching demo: a replicated pair of machines in one browser page, with
live views of every sync and buttons to pull the plug. Open the printed URL in a
current Chrome, Edge or Firefox (it needs WebAssembly and module workers, and
about 1 GB of memory for the two machines). Ctrl-C stops the server.

Options:
  --port PORT   where to serve (default ${DEFAULT_DEMO_PORT}; 0 picks a free port)
  --host HOST   address to serve on (default 127.0.0.1). The page needs a secure
                context: plain http works only on 127.0.0.1 or localhost
  --no-build    serve the existing build (npm run build:web) instead of rebuilding
  --dir DIR     the build folder (default harness/demo/dist)
  -h, --help    show this help
`;

export const demoCommand: Subcommand = {
  name: "demo",
  summary: "the teaching demo: a replicated pair live in a browser page",
  usage: USAGE,
  async run(argv) {
    const values = parseOptions(argv, {
      port: { type: "string" },
      host: { type: "string" },
      "no-build": { type: "boolean" },
      dir: { type: "string" },
      help: { type: "boolean", short: "h" },
    });
    if (values.help) return printUsage(USAGE);
    const port = values.port === undefined ? DEFAULT_DEMO_PORT : parsePort("--port", values.port);
    const host = values.host ?? "127.0.0.1";
    if (host === "") throw new UsageError("--host: expected an address, got an empty string");
    const dir = values.dir ?? DEFAULT_OUT_DIR;
    if (values["no-build"]) {
      await access(join(dir, "index.html")).catch(() => {
        throw new CliError(`--no-build: ${dir} holds no build (run npm run build:web first)`);
      });
    } else {
      const started = performance.now();
      process.stderr.write("twinvm demo: building the page...\n");
      await buildDemo({ outDir: dir, log: (line) => process.stderr.write(`twinvm demo: ${line}\n`) });
      process.stderr.write(`twinvm demo: built in ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
    }
    const server = await serveDemo(dir, { host, port }).catch((error: NodeJS.ErrnoException) => {
      throw new CliError(`cannot serve on ${host}:${port}: ${error.code === "EADDRINUSE" ? "the port is in use (try --port 0)" : error.message}`);
    });
    process.stdout.write(`twinvm demo: open ${server.url} in your browser (Ctrl-C stops the server)\n`);
    if (!LOOPBACK.has(host)) {
      process.stderr.write(
        `twinvm demo: warning: over plain http, browsers give ${host} no WebCrypto: the page will say so. Use 127.0.0.1 or localhost (e.g. through an SSH tunnel).\n`,
      );
    }
    return new Promise<number>((resolve) => {
      const stop = () => {
        process.off("SIGINT", stop);
        process.off("SIGTERM", stop);
        void server.close().then(() => resolve(0));
      };
      process.on("SIGINT", stop);
      process.on("SIGTERM", stop);
    });
  },
};
