// A terminal attached to a guest console that lives in replica-node processes:
// output from whichever node runs the guest now, input to it (queued while none
// does, e.g. during a takeover), what happens to the nodes as notices (or, with
// --json, everything as JSON lines on stdout), a live status line, and the
// escape-key commands. The nodes are behind a ConsoleSource: one node (`primary`,
// `secondary`) or a healing pair (`pair`).
import type { NodeProcess } from "../node-process.ts";
import type { NodeEvent } from "../replica-node.ts";
import { attachTerminal, ESCAPE_NAME, type KeyCommand } from "./terminal.ts";
import { BottomStatusRow, StatusSampler } from "./status-line.ts";

export interface SessionHandlers {
  /** Guest console output to show. */
  output(text: string): void;
  /** Something happened to the nodes (a human-readable line). */
  notice(text: string): void;
  /** The same as a JSON-able event, for --json. */
  event(event: object): void;
  /** Nothing can run the guest any more (exit code 0: it left on purpose, e.g. migrated away). */
  ended(code?: number): void;
}

export interface ConsoleSource {
  subscribe(handlers: SessionHandlers): () => void;
  /** Sends input to the guest; undefined while no node runs it (the session queues the input). */
  input(bytes: Uint8Array): Promise<void> | undefined;
  /** The status line's text, or undefined when no node can answer. */
  statusText(sampler: StatusSampler): Promise<string | undefined>;
  /** Stops every node. */
  stop(): Promise<void>;
}

export interface NodeSessionOptions {
  source: ConsoleSource;
  extraCommands: KeyCommand[];
  /** Draw the live status row (only where the terminal supports it). */
  statusLine: boolean;
  /** JSON lines on stdout (events, console output as events) instead of the console and notices. */
  json?: boolean;
}

const STATUS_REFRESH_MS = 1000;
/** After piped input ends: wait for this much console silence before quitting... */
const DRAIN_QUIET_MS = 1500;
/** ...but no longer than this. */
const DRAIN_MAX_MS = 20_000;
const SHUTDOWN_GRACE_MS = 5000;

/** Runs until the user quits, input ends, or no node can run the guest; resolves with the exit code. */
export function runNodeSession(options: NodeSessionOptions): Promise<number> {
  return new Promise<number>((resolve) => {
    const sampler = new StatusSampler();
    const json = options.json === true;
    const statusRow = options.statusLine && !json && BottomStatusRow.supported() ? new BottomStatusRow() : undefined;
    const queuedInput: Uint8Array[] = [];
    let lastOutputAt = performance.now();
    let finished = false;

    const notice = (text: string) => {
      if (!json) process.stderr.write(`\r\ntwinvm: ${text.replaceAll("\n", "\r\n")}\r\n`);
    };

    function deliver(bytes: Uint8Array): void {
      const sent = options.source.input(bytes);
      if (sent === undefined) queuedInput.push(bytes);
      else sent.catch((error: unknown) => notice(`input: ${(error as Error).message}`));
    }

    function flushQueue(): void {
      const queued = queuedInput.splice(0);
      for (const bytes of queued) deliver(bytes);
    }

    const unsubscribe = options.source.subscribe({
      output(text) {
        lastOutputAt = performance.now();
        if (json) process.stdout.write(JSON.stringify({ type: "console", text }) + "\n");
        else process.stdout.write(text);
      },
      notice(text) {
        notice(text);
        flushQueue();
      },
      event(event) {
        if (json) process.stdout.write(JSON.stringify(event) + "\n");
      },
      ended(code = 1) {
        void finish(code);
      },
    });

    const statusText = () => options.source.statusText(sampler).catch(() => undefined);
    const commands: KeyCommand[] = [
      ...options.extraCommands,
      { key: "s", help: "print the replication status", run: () => void statusText().then((text) => notice(text ?? "no node to ask")) },
      { key: "q", help: "quit (stops the node processes)", run: () => void finish(0) },
    ];
    const terminal = attachTerminal({ send: deliver, commands, onEnd: () => void drainThenFinish() });

    statusRow?.start();
    const refresh = setInterval(() => {
      if (statusRow) void statusText().then((text) => text !== undefined && !finished && statusRow.draw(`${text} | ${ESCAPE_NAME} ? keys`));
    }, STATUS_REFRESH_MS);

    const onSignal = () => void finish(130);
    for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(signal, onSignal);

    async function drainThenFinish(): Promise<void> {
      const endedAt = performance.now();
      while (performance.now() - endedAt < DRAIN_MAX_MS && !finished) {
        const now = performance.now();
        if (queuedInput.length === 0 && now - lastOutputAt >= DRAIN_QUIET_MS && now - endedAt >= DRAIN_QUIET_MS) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      await finish(0);
    }

    async function finish(code: number): Promise<void> {
      if (finished) return;
      finished = true;
      clearInterval(refresh);
      for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.off(signal, onSignal);
      terminal.detach();
      statusRow?.stop();
      unsubscribe();
      await options.source.stop();
      if (!json) process.stderr.write(`\ntwinvm: stopped\n`);
      resolve(code);
    }
  });
}

/** Asks a node to shut down cleanly, and kills it if it does not within a few seconds. */
export function stopNode(node: NodeProcess): Promise<void> {
  return node.stop(SHUTDOWN_GRACE_MS);
}

/** One node process (`twinvm primary`, `twinvm secondary`) as a console source; `runsGuest` says when input may go to it. */
export function singleNodeSource(label: string, node: NodeProcess, runsGuest: () => boolean): ConsoleSource {
  return {
    subscribe(handlers) {
      const unsubscribe = node.onEvent((event: NodeEvent) => {
        if (event.type === "output") {
          handlers.output(event.text);
        } else if (event.type === "state") {
          handlers.event({ type: "state", node: label, engine: event.engine, state: event.state, reason: event.reason });
          handlers.notice(`${label}: ${event.state} (${event.reason})`);
        } else if (event.type === "sync") {
          handlers.event({ type: "sync", node: label, report: event.report });
        } else if (event.type === "fatal") {
          handlers.notice(`${label} failed: ${event.error.split("\n")[0]}`);
        }
      });
      void node.exited.then((code) => {
        handlers.event({ type: "node-exited", node: label, code });
        handlers.notice(`${label} (pid ${node.child.pid}) exited${code === null ? " (killed)" : ` with code ${code}`}`);
        // A node that exits 0 left on purpose (it migrated its guest away): not a failure.
        handlers.ended(code === 0 ? 0 : 1);
      });
      return unsubscribe;
    },
    input: (bytes) => (runsGuest() ? node.input(bytes) : undefined),
    async statusText(sampler) {
      return node.running ? sampler.line(label, await node.metrics()) : undefined;
    },
    stop: () => stopNode(node),
  };
}
