#!/usr/bin/env node
// The `twinvm` executable: runs the command line and exits with its code.
// From a clone, harness/bin/twinvm.js runs this file through tsx; the package's
// bin is its compiled form (dist/harness/twinvm.js), run by plain node.
import { main } from "./cli/main.ts";

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`twinvm: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
