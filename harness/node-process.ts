// The parent's handle on a replica-node process: start it, send it requests,
// wait for its states, kill it. It keeps the node's states, released console
// output and stderr, so a failing test can show them.
import { fork, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { MetricsSnapshot } from "../replication/engine/metrics.ts";
import type { NodeConfig, NodeEvent, NodeRequest } from "./replica-node.ts";

/**
 * The node's entry point beside this module: from a clone it is the TypeScript
 * source, run through tsx; from the package it is compiled JavaScript, run by node.
 */
function nodeEntry(): { script: string; execArgv: string[] } {
  const fromSource = import.meta.url.endsWith(".ts");
  return {
    script: fileURLToPath(new URL(fromSource ? "./replica-node.ts" : "./replica-node.js", import.meta.url)),
    execArgv: fromSource ? ["--import", "tsx"] : [],
  };
}

/** Logs and transcripts kept per node: the last 4 MiB (characters) of each. */
const KEPT_CHARS = 4 << 20;
const keepTail = (text: string) => (text.length > KEPT_CHARS ? text.slice(-KEPT_CHARS / 2) : text);

type RequestBody = NodeRequest extends infer R ? (R extends { id: number } ? Omit<R, "id"> : never) : never;

export class NodeProcess {
  readonly child: ChildProcess;
  /** Every state either of the node's engines entered, in order. */
  readonly states: string[] = [];
  /** The same with the engine, the reason and when (performance.now()). */
  readonly stateLog: { engine: "primary" | "secondary"; state: string; reason: string; at: number }[] = [];
  /** The guest's console output this node released (all of it: the transcript). */
  output = "";
  #nextId = 1;
  #replies = new Map<number, { type: NodeRequest["type"]; resolve(value: unknown): void; reject(error: Error): void }>();
  #listeners = new Set<(event: NodeEvent) => void>();
  #exited: Promise<number | null>;
  stderr = "";
  /** The node's name (its role unless the config names it), for messages. */
  readonly name: string;

  constructor(config: NodeConfig, options: { env?: NodeJS.ProcessEnv; echoStderr?: boolean } = {}) {
    this.name = config.name ?? config.role;
    const entry = nodeEntry();
    this.child = fork(entry.script, [JSON.stringify(config)], {
      execArgv: entry.execArgv,
      env: options.env ?? process.env,
      stdio: ["ignore", "ignore", "pipe", "ipc"],
    });
    this.child.stderr!.on("data", (chunk: Buffer) => {
      this.stderr = keepTail(this.stderr + chunk.toString());
      if (options.echoStderr) process.stderr.write(`[${config.role}] ${chunk.toString()}`);
    });
    this.child.on("message", (raw) => this.#receive(raw as NodeEvent));
    this.#exited = new Promise((resolve) => this.child.on("exit", (code) => resolve(code)));
    void this.#exited.then(() => {
      for (const reply of this.#replies.values()) reply.reject(new Error(`node exited before answering ${reply.type}; stderr:\n${this.stderr.slice(-2000)}`));
      this.#replies.clear();
    });
  }

  get exited(): Promise<number | null> {
    return this.#exited;
  }

  request<T>(body: RequestBody): Promise<T> {
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      if (!this.child.connected) return reject(new Error(`node has exited; cannot send ${body.type}`));
      this.#replies.set(id, { type: body.type, resolve: resolve, reject });
      // A callback turns a send on a channel that just closed into this rejection instead of an 'error' event.
      this.child.send({ ...body, id }, (error: Error | null) => {
        if (error === null || !this.#replies.delete(id)) return;
        reject(error);
      });
    });
  }

  /** Runs a command in the node's guest; a failure also names the node's states and ends with its log, where a hang's cause shows. */
  exec(command: string, timeoutMs = 60_000): Promise<{ output: string; exitCode: number }> {
    return this.request<{ output: string; exitCode: number }>({ type: "exec", command, timeoutMs }).catch((error: Error) => {
      throw new Error(`${error.message}\n${this.describe()}`, { cause: error });
    });
  }

  /** The node's states with their reasons and the end of its log, for error messages. */
  describe(logChars = 3000): string {
    const states = this.stateLog.map((s) => `  ${s.engine} ${s.state}: ${s.reason}`).join("\n") || "  (none)";
    return `node ${this.name} (${this.running ? "running" : "exited"}), states:\n${states}\nits log ends:\n${this.stderr.slice(-logChars)}`;
  }

  /** Sends console input to the node's guest; rejects if the guest does not run there. */
  input(bytes: Uint8Array): Promise<void> {
    return this.request({ type: "input", base64: Buffer.from(bytes).toString("base64") });
  }

  /** `restart`: duration percentiles count afresh after this snapshot. */
  metrics(restart = false): Promise<MetricsSnapshot> {
    return this.request({ type: "metrics", restart });
  }

  /** Calls `listener` with every event from now on; returns the unsubscribe function. */
  onEvent(listener: (event: NodeEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Resolves with the first event that `match` accepts (including ones already seen, for states). */
  waitFor<E extends NodeEvent>(match: (event: NodeEvent) => event is E, timeoutMs: number, what: string): Promise<E> {
    return new Promise<E>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#listeners.delete(listener);
        reject(new Error(`no ${what} within ${timeoutMs} ms; states ${this.states.join(" > ")}; stderr:\n${this.stderr.slice(-3000)}`));
      }, timeoutMs);
      const listener = (event: NodeEvent) => {
        if (!match(event)) return;
        clearTimeout(timer);
        this.#listeners.delete(listener);
        resolve(event);
      };
      this.#listeners.add(listener);
      void this.#exited.then((code) => {
        if (!this.#listeners.has(listener)) return;
        clearTimeout(timer);
        this.#listeners.delete(listener);
        reject(new Error(`node exited (${code}) before ${what}; stderr:\n${this.stderr.slice(-3000)}`));
      });
    });
  }

  async waitForState(state: string, timeoutMs: number): Promise<void> {
    if (this.states.includes(state)) return;
    await this.waitFor((e): e is Extract<NodeEvent, { type: "state" }> => e.type === "state" && e.state === state, timeoutMs, `state ${state}`);
  }

  async listeningUrl(timeoutMs: number): Promise<string> {
    return (await this.waitFor((e): e is Extract<NodeEvent, { type: "listening" }> => e.type === "listening", timeoutMs, "listening")).url;
  }

  kill(signal: NodeJS.Signals = "SIGKILL"): Promise<number | null> {
    if (this.running) this.child.kill(signal);
    return this.#exited;
  }

  /** Asks the node to shut down cleanly (disks closed), and SIGKILLs it if it has not exited within `graceMs`. */
  async stop(graceMs = 5000): Promise<void> {
    if (!this.running) return;
    const timer = setTimeout(() => void this.kill("SIGKILL"), graceMs);
    await this.request({ type: "shutdown" }).catch(() => this.kill("SIGKILL"));
    await this.#exited;
    clearTimeout(timer);
  }

  #receive(event: NodeEvent): void {
    if (event.type === "reply") {
      const waiter = this.#replies.get(event.id);
      this.#replies.delete(event.id);
      if (event.ok) waiter?.resolve(event.result);
      else waiter?.reject(new Error(event.error));
    } else if (event.type === "state") {
      this.states.push(event.state);
      this.stateLog.push({ engine: event.engine, state: event.state, reason: event.reason, at: performance.now() });
    } else if (event.type === "output") {
      this.output = keepTail(this.output + event.text);
    }
    for (const listener of [...this.#listeners]) listener(event);
  }
}
