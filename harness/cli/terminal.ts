// The user's side of a guest console: stdin to the guest, with an escape key
// (Ctrl-], as telnet) followed by a command key for twinvm itself. On a TTY,
// stdin is raw so that every key (Ctrl-C included) reaches the guest. Piped
// stdin (scripts) is forwarded a whole line at a time, escape sequences work the
// same way, and the end of input is reported so the caller can drain and quit.

export const ESCAPE_BYTE = 0x1d; // Ctrl-]
export const ESCAPE_NAME = "Ctrl-]";

export interface KeyCommand {
  key: string;
  help: string;
  run(): void;
}

export interface TerminalOptions {
  /** Bytes for the guest. */
  send(bytes: Uint8Array): void;
  commands: KeyCommand[];
  /** Piped stdin ended (never called for a TTY). */
  onEnd(): void;
}

export interface AttachedTerminal {
  detach(): void;
}

export function keyHelp(commands: KeyCommand[]): string {
  return [`${ESCAPE_NAME} then:`, ...commands.map((c) => `  ${c.key}  ${c.help}`), `  ${ESCAPE_NAME}  send ${ESCAPE_NAME} itself to the guest`].join("\n");
}

export function attachTerminal(options: TerminalOptions): AttachedTerminal {
  const stdin = process.stdin;
  const tty = stdin.isTTY === true;
  let escaped = false;
  /** Piped: a script's "Ctrl-] k\n" ends with a newline that belongs to the key, not to the guest. */
  let swallowNewline = false;
  let partialLine: number[] = [];

  const help = () => process.stderr.write(`\r\ntwinvm: ${keyHelp(options.commands).replaceAll("\n", "\r\n")}\r\n`);

  function runCommand(byte: number): void {
    if (byte === ESCAPE_BYTE) return forward([byte]);
    const command = options.commands.find((c) => c.key === String.fromCharCode(byte));
    if (command) command.run();
    else help();
  }

  function forward(bytes: number[]): void {
    if (bytes.length > 0) options.send(Uint8Array.from(bytes));
  }

  const onData = (chunk: Buffer) => {
    let pending: number[] = [];
    for (const byte of chunk) {
      const afterCommand = swallowNewline;
      swallowNewline = false;
      if (escaped) {
        escaped = false;
        swallowNewline = !tty;
        runCommand(byte);
      } else if (afterCommand && byte === 0x0a) {
        continue;
      } else if (byte === ESCAPE_BYTE) {
        if (tty) forward(pending);
        else partialLine.push(...pending);
        pending = [];
        escaped = true;
      } else {
        pending.push(byte);
      }
    }
    if (tty) return forward(pending);
    partialLine.push(...pending);
    const lastNewline = partialLine.lastIndexOf(0x0a);
    if (lastNewline >= 0) {
      forward(partialLine.slice(0, lastNewline + 1));
      partialLine = partialLine.slice(lastNewline + 1);
    }
  };
  const onEnd = () => {
    forward(partialLine);
    partialLine = [];
    options.onEnd();
  };

  if (tty) stdin.setRawMode(true);
  stdin.on("data", onData);
  stdin.on("end", onEnd);
  stdin.resume();
  return {
    detach() {
      stdin.off("data", onData);
      stdin.off("end", onEnd);
      if (tty) stdin.setRawMode(false);
      stdin.pause();
    },
  };
}
