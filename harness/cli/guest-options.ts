// Options that change what is in the guest, shared by the commands that run one:
// an overlay folder, a start-up command, extra kernel arguments.
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { OverlayError, type GuestOverlay } from "../overlay/archive.ts";
import { prepareOverlay } from "../testing/pair-files.ts";
import { CliError, UsageError } from "./args.ts";

export const GUEST_OPTIONS = {
  "guest-overlay": { type: "string" },
  "guest-startup": { type: "string" },
  "kernel-args": { type: "string" },
} as const;

export const GUEST_HELP = `  --guest-overlay DIR add DIR's files to the guest's root file system (DIR/opt/x -> /opt/x),
                      as one more initramfs archive; give both nodes the same
  --guest-startup CMD a shell command line the guest runs at boot before it is ready
                      (output in /var/log/twinvm-startup.log; end it with & for a daemon)
  --kernel-args ARGS  appended to the guest kernel's command line (e.g. twinvm.root=/dev/vda)`;

export interface GuestOptionValues {
  "guest-overlay"?: string;
  "guest-startup"?: string;
  "kernel-args"?: string;
}

export function guestOptions(values: GuestOptionValues): { overlay?: GuestOverlay; kernelArgs?: string } {
  const dir = values["guest-overlay"];
  if (dir !== undefined) {
    let isDir: boolean;
    try {
      isDir = statSync(dir).isDirectory();
    } catch {
      throw new CliError(`--guest-overlay ${dir}: no such folder`);
    }
    if (!isDir) throw new CliError(`--guest-overlay ${dir}: not a folder`);
  }
  const startup = values["guest-startup"];
  if (startup !== undefined && startup.trim() === "") throw new UsageError("--guest-startup: the command is empty");
  const kernelArgs = values["kernel-args"];
  if (kernelArgs !== undefined && /[\r\n]/.test(kernelArgs)) throw new UsageError("--kernel-args: must be a single line");
  const overlay = dir !== undefined || startup !== undefined ? { ...(dir !== undefined && { dir }), ...(startup !== undefined && { startup }) } : undefined;
  return { ...(overlay && { overlay }), ...(kernelArgs !== undefined && { kernelArgs }) };
}

/** For a single node: the overlay archive in a private temporary folder (removed by `dispose`), or nothing. */
export async function guestArchive(
  values: GuestOptionValues,
  memoryMiB: number | undefined,
): Promise<{ overlayArchive?: string; kernelArgs?: string; dispose: () => void }> {
  const { overlay, kernelArgs } = guestOptions(values);
  if (overlay === undefined) return { ...(kernelArgs !== undefined && { kernelArgs }), dispose: () => undefined };
  const dir = mkdtempSync(join(tmpdir(), "twinvm-overlay-"));
  const dispose = () => rmSync(dir, { recursive: true, force: true });
  try {
    const overlayArchive = await prepareOverlay(dir, overlay, memoryMiB);
    return { ...(overlayArchive !== undefined && { overlayArchive }), ...(kernelArgs !== undefined && { kernelArgs }), dispose };
  } catch (error) {
    dispose();
    throw error instanceof OverlayError ? new CliError(error.message) : error;
  }
}
