// The witness of a pair whose nodes are child processes (`twinvm pair`, the test API): the
// parent process that started both nodes outlives either of them and is the witness; a node
// asks it over Node's IPC channel. A parent that does not answer within the bound counts as
// unreachable (the asker then holds its guest's I/O or does not take over: never guesses).
import type { Witness, WitnessAnswer } from "../../replication/arbiter/witness.ts";

/** Node -> parent. */
export interface WitnessQuestion {
  type: "witness-ask";
  id: number;
  op: "claim" | "renew" | "hold";
  node: string;
  epoch: number;
  /** A hold's length (0 otherwise). */
  holdMs: number;
}

/** Parent -> node. */
export interface WitnessReply {
  type: "witness-answer";
  id: number;
  answer: WitnessAnswer;
}

/** How long a node waits for its parent's answer. */
export const IPC_WITNESS_TIMEOUT_MS = 1000;

/** A node's view of its parent as the witness. */
export class IpcWitness implements Witness {
  #nextId = 1;
  readonly #waiting = new Map<number, { resolve: (answer: WitnessAnswer) => void; reject: (error: Error) => void; timer: ReturnType<typeof setTimeout> }>();

  constructor(private readonly send: (question: WitnessQuestion) => boolean) {}

  claim(node: string, epoch: number): Promise<WitnessAnswer> {
    return this.#ask("claim", node, epoch);
  }

  renew(node: string, epoch: number): Promise<WitnessAnswer> {
    return this.#ask("renew", node, epoch);
  }

  hold(node: string, epoch: number, holdMs: number): Promise<WitnessAnswer> {
    return this.#ask("hold", node, epoch, holdMs);
  }

  /** An answer from the parent (the node's IPC handler passes witness replies here). */
  answered(reply: WitnessReply): void {
    const waiter = this.#waiting.get(reply.id);
    if (waiter === undefined) return; // it timed out: the asker already acted on that
    this.#waiting.delete(reply.id);
    clearTimeout(waiter.timer);
    waiter.resolve(reply.answer);
  }

  #ask(op: WitnessQuestion["op"], node: string, epoch: number, holdMs = 0): Promise<WitnessAnswer> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(id);
        reject(new Error(`the pair's parent process did not answer within ${IPC_WITNESS_TIMEOUT_MS} ms`));
      }, IPC_WITNESS_TIMEOUT_MS);
      this.#waiting.set(id, { resolve, reject, timer });
      if (!this.send({ type: "witness-ask", id, op, node, epoch, holdMs })) {
        clearTimeout(timer);
        this.#waiting.delete(id);
        reject(new Error("the IPC channel to the pair's parent process is closed"));
      }
    });
  }
}
