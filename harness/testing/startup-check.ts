// After a boot with an overlay's start-up command: did it run, and did it succeed?
import { STARTUP_LOG, STARTUP_STATUS } from "../overlay/archive.ts";
import type { GuestShell } from "./guest-files.ts";

export class StartupCommandError extends Error {
  override name = "StartupCommandError";
}

/** Throws a StartupCommandError with the command's log unless it ran and exited 0. */
export async function checkStartupCommand(shell: GuestShell): Promise<void> {
  const { output } = await shell.exec(`echo "STATUS $(cat ${STARTUP_STATUS} 2>/dev/null || echo none)"`, { timeoutMs: 20_000 });
  const status = /STATUS (\S+)/.exec(output)?.[1];
  if (status === "0") return;
  if (status === "none")
    throw new StartupCommandError(
      `the guest did not run the overlay's start-up command (no ${STARTUP_STATUS}; does the guest image have /bin/twinvm-startup?)`,
    );
  const log = (await shell.exec(`tail -n 20 ${STARTUP_LOG}`, { timeoutMs: 20_000 })).output;
  throw new StartupCommandError(`the overlay's start-up command exited with ${status}; ${STARTUP_LOG}:\n${log}`);
}
