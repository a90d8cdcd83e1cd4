// The `twinvm` command: dispatches to a subcommand and turns its errors into
// exit codes (2: the command line is wrong; 1: anything else went wrong).
// Importing this module runs nothing (the package exports it as `twinvm/cli`);
// harness/twinvm.ts is the executable. The subcommand modules load the emulator
// only when they run, so that `--help` and the control commands start quickly.
import { TwinvmError } from "../../emulator/errors.ts";
import { SecretError } from "../../replication/node/secret.ts";
import { CliError, UsageError, type Subcommand } from "./args.ts";
import { OverlayError } from "../overlay/archive.ts";
import { PairError } from "../testing/errors.ts";
import { PairOptionError } from "../testing/options.ts";
import { StartupCommandError } from "../testing/startup-check.ts";
import { UploadError } from "../guest-upload.ts";
import { execCommand, inspectCommand, migrateCommand, promoteCommand, statusCommand, verifyCommand } from "./control.ts";
import { gatewayCommand } from "./gateway.ts";
import { witnessCommand } from "./witness.ts";
import { pairCommand } from "./pair.ts";
import { primaryCommand } from "./primary.ts";
import { runCommand } from "./run.ts";
import { secondaryCommand } from "./secondary.ts";

/**
 * `twinvm demo` (harness/demo/) bundles the TypeScript sources with esbuild, so it runs
 * from a clone; it is loaded only when asked for, and the package says so instead.
 */
const demoCommand: Subcommand = {
  name: "demo",
  summary: "the teaching demo: a replicated pair live in a browser page (from a clone)",
  usage: "Usage: twinvm demo [options] (see twinvm demo --help)\n",
  async run(argv) {
    let demo: Subcommand;
    // Not a literal: the package build must not follow it into the demo (nor rewrite it to .js).
    const module: string = "../demo/demo-command.ts";
    try {
      ({ demoCommand: demo } = (await import(module)) as { demoCommand: Subcommand });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ERR_MODULE_NOT_FOUND") throw error;
      throw new CliError("the browser demo runs from a clone of the twinvm repository (npm run twinvm -- demo); the package does not include its sources");
    }
    try {
      return await demo.run(argv);
    } catch (error) {
      if (!(error instanceof UsageError)) throw error;
      process.stderr.write(`twinvm demo: ${error.message}\n\n${demo.usage}`);
      return 2;
    }
  },
};

const SUBCOMMANDS: Subcommand[] = [
  pairCommand,
  runCommand,
  primaryCommand,
  secondaryCommand,
  statusCommand,
  promoteCommand,
  execCommand,
  verifyCommand,
  inspectCommand,
  migrateCommand,
  gatewayCommand,
  witnessCommand,
  demoCommand,
];

const USAGE = `Usage: twinvm <command> [options]

A fault-tolerant pair of x86 virtual machines (v86 + Kemari-style replication).

Commands:
${SUBCOMMANDS.map((c) => `  ${c.name.padEnd(10)} ${c.summary}`).join("\n")}

\`twinvm <command> --help\` lists a command's options.
`;

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    process.stdout.write(USAGE);
    return name === undefined ? 2 : 0;
  }
  const command = SUBCOMMANDS.find((c) => c.name === name);
  if (!command) {
    process.stderr.write(`twinvm: unknown command ${JSON.stringify(name)}\n\n${USAGE}`);
    return 2;
  }
  try {
    return await command.run(rest);
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`twinvm ${name}: ${error.message}\n\n${command.usage}`);
      return 2;
    }
    const known = [CliError, TwinvmError, SecretError, PairError, PairOptionError, OverlayError, StartupCommandError, UploadError].some(
      (type) => error instanceof type,
    );
    process.stderr.write(`\ntwinvm ${name}: ${known ? (error as Error).message : ((error as Error).stack ?? String(error))}\n`);
    return 1;
  }
}
