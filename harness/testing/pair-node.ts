// One node process of a pair as a test sees it: its name, the role it was started
// in, its disk images, the states its engines went through, its log and the
// console output it released, and (while it runs the guest) its link proxy.
import type { FaultProxy } from "../fault-proxy.ts";
import type { NodeProcess } from "../node-process.ts";

export type NodeRole = "primary" | "secondary";

export class PairNode {
  /** The fault proxy this node dials as a primary (to reach its secondary). */
  link: FaultProxy | undefined;

  constructor(
    /** NAME-primary, NAME-secondary, NAME-secondary-2, ... (its control socket name). */
    readonly name: string,
    readonly startedAs: NodeRole,
    readonly process: NodeProcess,
    /** Its disk images, vda first. */
    readonly disks: readonly string[],
  ) {}

  get pid(): number | undefined {
    return this.process.child.pid;
  }

  get running(): boolean {
    return this.process.running;
  }

  /** The last state of its primary engine (a started primary, or a secondary that took over and re-protects). */
  get primaryState(): string | undefined {
    return this.#last("primary");
  }

  /** The last state of its secondary engine (nodes started as secondaries). */
  get secondaryState(): string | undefined {
    return this.#last("secondary");
  }

  /** Whether this node has a primary engine (so it keeps dialling its link by itself). */
  get hasPrimaryEngine(): boolean {
    return this.process.stateLog.some((entry) => entry.engine === "primary");
  }

  /** The guest runs here: a live primary that is not fenced, or a secondary that took over. */
  get runsGuest(): boolean {
    if (!this.running || this.primaryState === "fenced") return false;
    return this.startedAs === "primary" ? this.primaryState !== undefined : this.secondaryState === "active";
  }

  /** A primary (or survivor) whose guest a secondary acknowledges. */
  get isProtected(): boolean {
    return this.running && this.primaryState === "protected";
  }

  /** The console output it released (its guest's transcript while it ran it). */
  get transcript(): string {
    return this.process.output;
  }

  /** Its stderr: engine and node log lines. */
  get log(): string {
    return this.process.stderr;
  }

  #last(engine: NodeRole): string | undefined {
    for (let i = this.process.stateLog.length - 1; i >= 0; i--) {
      const entry = this.process.stateLog[i]!;
      if (entry.engine === engine) return entry.state;
    }
    return undefined;
  }
}
