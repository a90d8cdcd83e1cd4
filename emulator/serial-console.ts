// The guest's first serial port as a console a program can drive: a bounded
// transcript, waits on patterns, and `exec` that returns a command's output
// and exit code however the shell echoes, redraws or queries the terminal.
import { ConsoleTimeoutError, TwinvmError } from "./errors.ts";

/** The byte stream the console sits on (v86's UART 0 in a Machine). */
export interface SerialPort {
  onByte(listener: (byte: number) => void): () => void;
  send(bytes: Uint8Array): void;
}

export interface ExecResult {
  /** What the command printed (stdout and stderr), CRLF folded to LF, terminal escapes removed. */
  output: string;
  exitCode: number;
}

export interface ConsoleMatch {
  /** The matched text. */
  text: string;
  /** Capture groups of a RegExp pattern. */
  groups: string[];
  /** Transcript position just past the match: pass it as `from` to wait for what follows. */
  end: number;
}

export interface WaitOptions {
  timeoutMs?: number;
  /** Transcript position to search from (default: the current end, i.e. only new output). */
  from?: number;
  signal?: AbortSignal;
}

const TRANSCRIPT_LIMIT = 1 << 20; // characters kept for waits and console tails
const DEFAULT_TIMEOUT_MS = 30_000;
// The longest line the default guest's shell (busybox ash, line editing on) takes, newline
// not counted; measured: 1022 runs, 1023 is silently cut and the exec would hang.
export const SHELL_LINE_LIMIT = 1022;
// Marker ids are a 6-character prefix and a decimal counter; budget for a 10-digit counter.
const MARKER_ID_MAX_CHARS = 16;
// CSI sequences (ESC [ ... final byte), other two-byte ESC sequences, and stray CRs.
// eslint-disable-next-line no-control-regex -- matching terminal control sequences is the point
const TERMINAL_ESCAPES = /\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]|\r/g;

interface Waiter {
  pattern: RegExp;
  from: number;
  resolve(match: ConsoleMatch): void;
}

export class SerialConsole {
  #transcript = "";
  /** Characters dropped from the front of the transcript to bound it. */
  #dropped = 0;
  #decoder = new TextDecoder("utf-8", { fatal: false });
  #pending: number[] = [];
  #flushScheduled = false;
  #waiters = new Set<Waiter>();
  #outputListeners = new Set<(bytes: Uint8Array) => void>();
  #execQueue: Promise<unknown> = Promise.resolve();
  #execCounter = 0;
  // Distinguishes this console's markers from any a previous host left in the guest.
  readonly #markerPrefix = Math.random().toString(36).slice(2, 8);
  readonly #detach: () => void;

  constructor(private readonly port: SerialPort) {
    this.#detach = port.onByte((byte) => this.#receive(byte));
  }

  /** Absolute transcript position of the next character the guest prints. */
  get position(): number {
    this.#flush();
    return this.#dropped + this.#transcript.length;
  }

  /** Raw guest output as it arrives (for attaching a terminal); returns an unsubscribe function. */
  onOutput(listener: (bytes: Uint8Array) => void): () => void {
    this.#outputListeners.add(listener);
    return () => this.#outputListeners.delete(listener);
  }

  send(input: string | Uint8Array): void {
    this.port.send(typeof input === "string" ? new TextEncoder().encode(input) : input);
  }

  /** The last `lines` lines the guest printed, escapes removed. */
  tail(lines = 20): string {
    this.#flush();
    return this.#transcript.replace(TERMINAL_ESCAPES, "").split("\n").slice(-lines).join("\n").trimEnd();
  }

  /** Resolves when the guest prints `pattern` at or after `from`; rejects with the console tail on timeout. */
  waitFor(pattern: string | RegExp, options: WaitOptions = {}): Promise<ConsoleMatch> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const regex = typeof pattern === "string" ? new RegExp(escapeRegExp(pattern), "g") : new RegExp(pattern.source, flagsWithG(pattern));
    const from = options.from ?? this.position;
    return new Promise<ConsoleMatch>((resolve, reject) => {
      const cleanup = () => {
        clearTimeout(timer);
        this.#waiters.delete(waiter);
        options.signal?.removeEventListener("abort", onAbort);
      };
      const waiter: Waiter = { pattern: regex, from, resolve: (m) => (cleanup(), resolve(m)) };
      const timer = setTimeout(() => {
        cleanup();
        reject(new ConsoleTimeoutError(describePattern(pattern), timeoutMs, this.tail()));
      }, timeoutMs);
      const onAbort = () => {
        cleanup();
        reject(new TwinvmError(`wait for ${describePattern(pattern)} aborted`, { cause: options.signal?.reason }));
      };
      options.signal?.addEventListener("abort", onAbort, { once: true });
      this.#waiters.add(waiter);
      this.#check(waiter);
    });
  }

  /**
   * Runs one shell command line and returns its output and exit code. Calls are
   * serialized. The command must be a single line; it may end in `&`. It runs in a subshell
   * (as `sh -c` would): `cd` and variables do not carry over to the next call.
   */
  exec(command: string, options: { timeoutMs?: number } = {}): Promise<ExecResult> {
    if (/[\r\n]/.test(command)) throw new TwinvmError("exec: the command must be a single line");
    const length = execLine("x".repeat(MARKER_ID_MAX_CHARS), command).length - 1;
    if (length > SHELL_LINE_LIMIT) {
      throw new TwinvmError(
        `exec: the command takes ${length - EXEC_WRAPPER_CHARS} characters once quoted for the guest's shell ` +
          `(each ' becomes 4), at most ${SHELL_LINE_LIMIT - EXEC_WRAPPER_CHARS} fit on its line; ` +
          `put a long script in a guest file and run that`,
      );
    }
    const run = this.#execQueue.then(() => this.#execNow(command, options.timeoutMs ?? DEFAULT_TIMEOUT_MS));
    this.#execQueue = run.catch(() => undefined);
    return run;
  }

  /** Stops listening to the port; pending waits time out. */
  close(): void {
    this.#detach();
  }

  async #execNow(command: string, timeoutMs: number): Promise<ExecResult> {
    const id = `${this.#markerPrefix}${++this.#execCounter}`;
    // The markers are printed by the guest; in the echo of the typed line they are split
    // by quotes, so the echo can never match them.
    const begin = `@tw:b:${id}@`;
    const end = `@tw:e:${id}@`;
    // The command runs as `eval` in a subshell, like `sh -c`: a syntax or expansion error (or
    // an `exit`) ends only the subshell, with its status, and the end marker still prints; an
    // interactive shell would otherwise drop the rest of the line and the exec would hang.
    const line = execLine(id, command);
    const from = this.position;
    this.send(line);
    const started = await this.waitFor(new RegExp(`${escapeRegExp(begin)}\\r?\\n`), { timeoutMs, from });
    const finished = await this.waitFor(new RegExp(`${escapeRegExp(end)}(\\d+)@`), { timeoutMs, from: started.end });
    const raw = this.#slice(started.end, finished.end - finished.text.length);
    return { output: raw.replace(TERMINAL_ESCAPES, ""), exitCode: Number(finished.groups[0]) };
  }

  #slice(start: number, end: number): string {
    return this.#transcript.slice(Math.max(0, start - this.#dropped), Math.max(0, end - this.#dropped));
  }

  #receive(byte: number): void {
    this.#pending.push(byte);
    // Bytes arrive one at a time inside v86's main loop: decode and match once per batch.
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      queueMicrotask(() => this.#flush());
    }
  }

  #flush(): void {
    this.#flushScheduled = false;
    if (this.#pending.length === 0) return;
    const bytes = Uint8Array.from(this.#pending);
    this.#pending = [];
    this.#transcript += this.#decoder.decode(bytes, { stream: true });
    if (this.#transcript.length > TRANSCRIPT_LIMIT) {
      const cut = this.#transcript.length - TRANSCRIPT_LIMIT / 2;
      this.#transcript = this.#transcript.slice(cut);
      this.#dropped += cut;
    }
    for (const listener of this.#outputListeners) listener(bytes);
    for (const waiter of this.#waiters) this.#check(waiter);
  }

  #check(waiter: Waiter): void {
    const start = Math.max(0, waiter.from - this.#dropped);
    waiter.pattern.lastIndex = start;
    const match = waiter.pattern.exec(this.#transcript);
    if (match === null) return;
    waiter.resolve({
      text: match[0],
      groups: match.slice(1).map((g) => g ?? ""),
      end: this.#dropped + match.index + match[0].length,
    });
  }
}

function execLine(id: string, command: string): string {
  return `echo '@tw:b:'"${id}@"; (eval ${shellQuote(command)}); echo '@tw:e:'"${id}@$?@"\n`;
}

/** Characters execLine adds around the quoted command (with the longest marker id). */
const EXEC_WRAPPER_CHARS = execLine("x".repeat(MARKER_ID_MAX_CHARS), "").length - 1 - shellQuote("").length;

/** One word for a POSIX shell: single-quoted, with each `'` written as `'\\''`. */
export function shellQuote(text: string): string {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

export function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function flagsWithG(pattern: RegExp): string {
  return pattern.flags.includes("g") ? pattern.flags.replace("y", "") : pattern.flags.replace("y", "") + "g";
}

function describePattern(pattern: string | RegExp): string {
  return typeof pattern === "string" ? JSON.stringify(pattern) : String(pattern);
}
