// `--load N`: N busy-loop processes for the whole run, each keeping a core busy, so that
// rounds also run the way they do on a loaded machine (the nodes then wait for a core).
import { spawn, type ChildProcess } from "node:child_process";

export interface Load {
  readonly pids: number[];
  stop(): void;
}

export function startLoad(processes: number): Load {
  const children: ChildProcess[] = [];
  for (let i = 0; i < processes; i++) children.push(spawn(process.execPath, ["-e", "for (;;) {}"], { stdio: "ignore" }));
  const stop = () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  };
  // A run that dies must not leave them spinning.
  process.once("exit", stop);
  return { pids: children.flatMap((child) => (child.pid === undefined ? [] : [child.pid])), stop };
}
