// Progress while a primary node boots (or restores) its guest and copies it to
// the secondary. The engine has no progress callback for the initial sync, so
// the percentage is estimated from its byte counters against RAM plus disk size
// (compression and disks the secondary already holds make it an upper bound
// on the work left, so it is shown as "~" and capped below 100%).
import type { NodeProcess } from "../node-process.ts";
import type { NodeEvent } from "../replica-node.ts";
import { CliError } from "./args.ts";
import { formatBytes, ProgressLine, seconds } from "./progress.ts";

const TICK_MS = 500;

export interface StartupOptions {
  label: string;
  /** RAM plus disk bytes: what a full initial sync would copy before compression. */
  syncEstimateBytes: number;
  /** A primary with mode "none" never syncs: ready means done. */
  replicated: boolean;
}

/** Resolves when the primary protects its guest (or, unreplicated, runs it); rejects if the node fails first. */
export function followPrimaryStartup(primary: NodeProcess, options: StartupOptions): Promise<void> {
  const progress = new ProgressLine();
  const started = performance.now();
  let phase = "starting";
  let phaseStarted = started;
  let syncing = false;
  let settled = false;

  return new Promise<void>((resolve, reject) => {
    /** Asks the primary for the bytes sent so far and shows them (the node answers while it syncs). */
    const showSync = () =>
      void primary.metrics().then(
        (m) => {
          if (settled || !syncing) return;
          const sent = Object.values(m.bytes).reduce((a, b) => a + b, 0);
          const percent = Math.min(99, (100 * sent) / Math.max(1, options.syncEstimateBytes));
          progress.update(
            `twinvm: initial sync: ${formatBytes(sent)} sent (~${percent.toFixed(0)}% of ${formatBytes(options.syncEstimateBytes)} RAM+disks), ${seconds(performance.now() - phaseStarted)}`,
            "initial sync",
          );
        },
        () => undefined,
      );
    const tick = setInterval(() => {
      if (syncing) showSync();
      else progress.update(`twinvm: ${options.label}: ${phase}... ${seconds(performance.now() - phaseStarted)}`, phase);
    }, TICK_MS);

    const unsubscribe = primary.onEvent((event: NodeEvent) => {
      if (event.type === "phase") {
        if (phase === "booting" || phase === "restoring")
          progress.done(`twinvm: ${options.label}: guest ${phase === "booting" ? "booted" : "restored"} in ${seconds(performance.now() - phaseStarted)}`);
        phase = event.phase;
        phaseStarted = performance.now();
        if (event.phase === "ready" && !options.replicated) settle();
      } else if (event.type === "state" && event.state === "initial-sync") {
        syncing = true;
        phaseStarted = performance.now();
      } else if (event.type === "state" && event.state === "protected") {
        progress.done(`twinvm: ${options.label}: ${event.reason}; guest protected ${seconds(performance.now() - started)} after start`);
        settle();
      } else if (event.type === "fatal") {
        settle(new CliError(`${options.label} failed: ${event.error.split("\n")[0]}`));
      }
    });
    void primary.exited.then((code) => settle(new CliError(`${options.label} exited (${code}) before its guest was ready:\n${primary.stderr.slice(-2000)}`)));

    function settle(error?: Error): void {
      if (settled) return;
      settled = true;
      clearInterval(tick);
      unsubscribe();
      progress.done();
      if (error) reject(error);
      else resolve();
    }
  });
}
