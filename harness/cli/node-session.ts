// A terminal attached to the guest console of replica-node processes: output
// from whichever node runs the guest now, input to it (queued while none does,
// e.g. during a takeover), node state changes as notices, a live status line,
// and the escape-key commands. Used by `primary`, `secondary` and `pair`.
import type { NodeProcess } from "../node-process.ts";
import type { NodeEvent } from "../replica-node.ts";
import { attachTerminal, ESCAPE_NAME, type KeyCommand } from "./terminal.ts";
import { BottomStatusRow, StatusSampler } from "./status-line.ts";

export interface LabeledNode {
  label: string;
  node: NodeProcess;
}

export interface NodeSessionOptions {
  nodes: LabeledNode[];
  /** The node whose guest the console talks to now; undefined while none runs one. */
  activeNode(): LabeledNode | undefined;
  /** The node whose metrics the status line shows. */
  statusNode(): LabeledNode | undefined;
  extraCommands: KeyCommand[];
  /** Draw the live status row (only where the terminal supports it). */
  statusLine: boolean;
}

const STATUS_REFRESH_MS = 1000;
/** After piped input ends: wait for this much console silence before quitting... */
const DRAIN_QUIET_MS = 1500;
/** ...but no longer than this. */
const DRAIN_MAX_MS = 20_000;
const SHUTDOWN_GRACE_MS = 5000;

/** Runs until the user quits, input ends, or every node has exited; resolves with the exit code. */
export function runNodeSession(options: NodeSessionOptions): Promise<number> {
  return new Promise<number>((resolve) => {
    const sampler = new StatusSampler();
    const statusRow = options.statusLine && BottomStatusRow.supported() ? new BottomStatusRow() : undefined;
    const queuedInput: Uint8Array[] = [];
    const unsubscribes: (() => void)[] = [];
    let lastOutputAt = performance.now();
    let finished = false;

    const notice = (text: string) => process.stderr.write(`\r\ntwinvm: ${text.replaceAll("\n", "\r\n")}\r\n`);

    function deliver(bytes: Uint8Array): void {
      const active = options.activeNode();
      if (!active) {
        queuedInput.push(bytes);
        return;
      }
      active.node.input(bytes).catch((error: unknown) => notice(`${active.label}: ${(error as Error).message}`));
    }

    function flushQueue(): void {
      if (!options.activeNode()) return;
      for (const bytes of queuedInput.splice(0)) deliver(bytes);
    }

    for (const labeled of options.nodes) {
      unsubscribes.push(labeled.node.onEvent((event: NodeEvent) => onNodeEvent(labeled, event)));
      void labeled.node.exited.then((code) => {
        if (finished) return;
        notice(`${labeled.label} (pid ${labeled.node.child.pid}) exited${code === null ? " (killed)" : ` with code ${code}`}`);
        if (options.nodes.every((n) => !n.node.running)) void finish(1);
      });
    }

    function onNodeEvent(labeled: LabeledNode, event: NodeEvent): void {
      if (event.type === "output") {
        if (options.activeNode()?.node !== labeled.node) return;
        lastOutputAt = performance.now();
        process.stdout.write(event.text);
      } else if (event.type === "state") {
        notice(`${labeled.label}: ${event.state} (${event.reason})`);
        flushQueue();
      } else if (event.type === "fatal") {
        notice(`${labeled.label} failed: ${event.error.split("\n")[0]}`);
      }
    }

    async function statusText(): Promise<string | undefined> {
      const shown = options.statusNode();
      if (!shown?.node.running) return undefined;
      try {
        return sampler.line(shown.label, await shown.node.metrics());
      } catch {
        return undefined; // the node is going away; the next tick shows the other one
      }
    }

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
      for (const unsubscribe of unsubscribes) unsubscribe();
      await Promise.all(options.nodes.map(({ node }) => stopNode(node)));
      process.stderr.write(`\ntwinvm: stopped\n`);
      resolve(code);
    }
  });
}

/** Asks a node to shut down cleanly, and kills it if it does not within a few seconds. */
export function stopNode(node: NodeProcess): Promise<void> {
  return node.stop(SHUTDOWN_GRACE_MS);
}
