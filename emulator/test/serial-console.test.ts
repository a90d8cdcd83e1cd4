// The console against a scripted shell that behaves like busybox ash on a tty:
// it echoes input, asks for the cursor position at each prompt, and prints CRLF.
import { expect } from "chai";
import { SHELL_LINE_LIMIT, SerialConsole, type SerialPort } from "../serial-console.ts";
import { ConsoleTimeoutError } from "../errors.ts";

class ScriptedShell implements SerialPort {
  #listeners = new Set<(byte: number) => void>();
  #line = "";
  constructor(private readonly run: (line: string) => { output: string; status: number }) {}

  onByte(listener: (byte: number) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  emit(text: string): void {
    for (const byte of new TextEncoder().encode(text)) for (const l of this.#listeners) l(byte);
  }

  send(bytes: Uint8Array): void {
    const text = new TextDecoder().decode(bytes);
    // Echo arrives with a line-editor redraw in the middle, as ash does for long lines.
    setTimeout(() => {
      for (const ch of text) {
        if (ch === "\n") {
          this.emit("\r\n");
          this.#execute(this.#line);
          this.#line = "";
        } else {
          this.#line += ch;
          this.emit(ch);
          if (this.#line.length === 40) this.emit("\x1b[K\r\x1b[2C");
        }
      }
    }, 1);
  }

  #execute(line: string): void {
    if (line.length > SHELL_LINE_LIMIT) return; // busybox cuts the line: nothing runs, nothing prints
    // Interpret only what SerialConsole.exec sends: echo marker; (eval 'command'); echo marker-with-status.
    const exec = /^echo '([^']*)'"([^"]*)"; \(eval '((?:[^']|'\\'')*)'\); echo '([^']*)'"([^"]*)"$/.exec(line);
    if (exec === null) throw new Error(`the scripted shell cannot run ${JSON.stringify(line)}`);
    const [, beginText, beginId, quoted, endText, endId] = exec;
    this.emit(beginText! + beginId! + "\r\n");
    const result = this.run(quoted!.replaceAll("'\\''", "'"));
    this.emit(result.output.replace(/\n/g, "\r\n"));
    this.emit(endText! + endId!.replace("$?", String(result.status)) + "\r\n");
    this.emit("# \x1b[6n");
  }
}

describe("SerialConsole (scripted shell)", () => {
  it("returns a command's output and exit code despite echo, redraws and cursor queries", async () => {
    const shell = new ScriptedShell((cmd) =>
      cmd === "cat /etc/motd" ? { output: "hello\nworld\n", status: 0 } : { output: "sh: nope: not found\n", status: 127 },
    );
    const console = new SerialConsole(shell);
    const ok = await console.exec("cat /etc/motd", { timeoutMs: 2000 });
    expect(ok).to.deep.equal({ output: "hello\nworld\n", exitCode: 0 });
    const bad = await console.exec("nope", { timeoutMs: 2000 });
    expect(bad.exitCode).to.equal(127);
    expect(bad.output).to.equal("sh: nope: not found\n");
  });

  it("hands the command to the shell as one quoted word, whatever quotes it holds", async () => {
    const seen: string[] = [];
    const shell = new ScriptedShell((cmd) => (seen.push(cmd), { output: "", status: 0 }));
    await new SerialConsole(shell).exec(`echo 'it''s' "a 'b'" \\'`, { timeoutMs: 2000 });
    expect(seen).to.deep.equal([`echo 'it''s' "a 'b'" \\'`]);
  });

  it("keeps output that has no trailing newline apart from the status marker", async () => {
    const shell = new ScriptedShell(() => ({ output: "no newline", status: 3 }));
    const result = await new SerialConsole(shell).exec("printf-partial", { timeoutMs: 2000 });
    expect(result).to.deep.equal({ output: "no newline", exitCode: 3 });
  });

  it("serializes concurrent execs so that outputs do not mix", async () => {
    const shell = new ScriptedShell((cmd) => ({ output: `${cmd}\n`, status: 0 }));
    const console = new SerialConsole(shell);
    const results = await Promise.all(["one", "two", "three"].map((c) => console.exec(`echo-${c}`, { timeoutMs: 2000 })));
    expect(results.map((r) => r.output)).to.deep.equal(["echo-one\n", "echo-two\n", "echo-three\n"]);
  });

  it("refuses, with the reason, a command too long for the shell's line once quoted", async () => {
    const seen: string[] = [];
    const console = new SerialConsole(new ScriptedShell((cmd) => (seen.push(cmd), { output: "", status: 0 })));
    const plain = `echo ${"a".repeat(895)}`; // the control socket's 900-character limit fits
    await console.exec(plain, { timeoutMs: 2000 });
    expect(seen).to.deep.equal([plain]);
    // The same length with 40 quotes grows by 120 characters and would be cut by the shell.
    const quoted = `echo ${"'a'".repeat(40)}${"a".repeat(775)}`;
    expect(quoted.length).to.equal(900);
    expect(() => console.exec(quoted)).to.throw(/1022 characters|each ' becomes 4[\s\S]*at most \d+ fit/);
  });

  it("rejects multi-line commands", () => {
    const console = new SerialConsole(new ScriptedShell(() => ({ output: "", status: 0 })));
    expect(() => console.exec("a\nb")).to.throw(/single line/);
  });

  it("times out with the last console lines", async () => {
    const shell = new ScriptedShell(() => ({ output: "", status: 0 }));
    const console = new SerialConsole(shell);
    shell.emit("line one\r\nline two\r\n");
    const error = await console.waitFor("never", { timeoutMs: 50 }).catch((e: unknown) => e);
    expect(error).to.be.instanceOf(ConsoleTimeoutError);
    expect((error as ConsoleTimeoutError).consoleTail).to.equal("line one\nline two");
    expect((error as Error).message).to.match(/timed out after 50 ms waiting for "never"[\s\S]*line two/);
  });

  it("finds a pattern split across many small chunks, and only after `from`", async () => {
    const shell = new ScriptedShell(() => ({ output: "", status: 0 }));
    const console = new SerialConsole(shell);
    shell.emit("READY\n");
    const afterFirst = console.position;
    const wait = console.waitFor(/READY\n/, { from: afterFirst, timeoutMs: 1000 });
    for (const ch of "noise READ") shell.emit(ch);
    await new Promise((r) => setTimeout(r, 5));
    shell.emit("Y\n");
    const match = await wait;
    expect(match.end).to.equal(console.position);
  });
});
