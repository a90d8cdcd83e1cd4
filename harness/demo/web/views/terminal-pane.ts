// One node's terminal (xterm.js): shows what the node releases, sends keystrokes to
// it while its guest runs there, and keeps a plain transcript (for the page's tests).
import { Terminal } from "@xterm/xterm";

/** Transcript kept per pane, enough for the last few screens of commands. */
const TRANSCRIPT_CHARS = 200_000;

export class TerminalPane {
  readonly terminal: Terminal;
  #transcript = "";
  readonly #decoder = new TextDecoder();
  #onInput: ((bytes: Uint8Array) => void) | undefined;

  constructor(
    readonly element: HTMLElement,
    readonly title: HTMLElement,
  ) {
    this.terminal = new Terminal({
      cols: 80,
      rows: 24,
      convertEol: false,
      cursorBlink: true,
      fontSize: 12,
      scrollback: 2000,
      theme: { background: "#101418" },
    });
    this.terminal.open(element);
    const encoder = new TextEncoder();
    this.terminal.onData((data) => this.#onInput?.(encoder.encode(data)));
  }

  /** Where keystrokes go; undefined: this node does not run the guest (input is dropped). */
  set onInput(handler: ((bytes: Uint8Array) => void) | undefined) {
    this.#onInput = handler;
  }

  /** A new node takes this pane over: a clean screen and transcript. */
  reset(): void {
    this.terminal.reset();
    this.#transcript = "";
  }

  write(bytes: Uint8Array): void {
    this.terminal.write(bytes);
    this.#keep(this.#decoder.decode(bytes, { stream: true }));
  }

  /** A line from the page itself (not the guest), dimmed. */
  note(text: string): void {
    this.terminal.write(`\r\n\x1b[2m[${text}]\x1b[0m\r\n`);
    this.#keep(`\n[${text}]\n`);
  }

  get transcript(): string {
    return this.#transcript;
  }

  #keep(text: string): void {
    this.#transcript = (this.#transcript + text).slice(-TRANSCRIPT_CHARS);
  }
}
