// A node's view of a witness on another host (`twinvm witness`, or a `twinvm gateway` that
// serves one): questions over the network link (authenticated with the pair's secret and
// encrypted, the handshake naming the link's protocol), one connection kept open and opened
// again when it is lost. A question not answered within the bound fails: the asker then holds
// its guest's I/O or does not take over, never guesses.
import { linkHandshake } from "../network/link-handshake.ts";
import { LinkSession, type LinkInbound } from "../network/link-session.ts";
import type { Transport } from "../transport/transport.ts";
import type { Witness, WitnessAnswer } from "./witness.ts";

export interface LinkWitnessOptions {
  url: string;
  secret: Uint8Array;
  /** This node's name at the witness (it proves the secret under it). */
  nodeId: string;
  dial: (url: string) => Promise<Transport>;
  /** How long a question may take, connecting included (default 1000 ms). */
  timeoutMs?: number;
}

export class LinkWitness implements Witness {
  readonly #options: LinkWitnessOptions;
  #session: Promise<LinkSession> | undefined;
  #nextId = 1;
  readonly #waiting = new Map<number, (answer: WitnessAnswer) => void>();

  constructor(options: LinkWitnessOptions) {
    this.#options = options;
  }

  claim(node: string, epoch: number): Promise<WitnessAnswer> {
    return this.#ask("claim", node, epoch);
  }

  renew(node: string, epoch: number): Promise<WitnessAnswer> {
    return this.#ask("renew", node, epoch);
  }

  hold(node: string, epoch: number, holdMs: number): Promise<WitnessAnswer> {
    return this.#ask("hold", node, epoch, holdMs);
  }

  close(): void {
    void this.#session?.then((session) => session.close("the node is done with the witness")).catch(() => undefined);
    this.#session = undefined;
  }

  async #ask(op: "claim" | "renew" | "hold", node: string, epoch: number, holdMs = 0): Promise<WitnessAnswer> {
    if (node !== this.#options.nodeId) throw new Error(`this link asks the witness as ${this.#options.nodeId}, not ${node}`);
    const timeoutMs = this.#options.timeoutMs ?? 1000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const id = this.#nextId++;
    try {
      return await Promise.race([
        this.#connected().then(
          (session) =>
            new Promise<WitnessAnswer>((resolve) => {
              this.#waiting.set(id, resolve);
              session.sendControl({ type: "witness-ask", id, op, epoch, holdMs });
            }),
        ),
        new Promise<never>(
          (_, reject) => (timer = setTimeout(() => reject(new Error(`the witness at ${this.#options.url} did not answer within ${timeoutMs} ms`)), timeoutMs)),
        ),
      ]);
    } finally {
      clearTimeout(timer);
      this.#waiting.delete(id);
    }
  }

  #connected(): Promise<LinkSession> {
    this.#session ??= (async () => {
      const transport = await this.#options.dial(this.#options.url);
      const link = await linkHandshake(transport, "node", this.#options.secret, { nodeId: this.#options.nodeId });
      const session = new LinkSession(link);
      session.onMessage((inbound: LinkInbound) => {
        if (inbound.kind !== "control" || inbound.message.type !== "witness-answer") return;
        const message = inbound.message;
        const answer: WitnessAnswer = message.granted
          ? { granted: true, epoch: message.epoch, leaseMs: message.leaseMs }
          : {
              granted: false,
              epoch: message.epoch,
              holder: message.holder === "" ? undefined : message.holder,
              reason: message.reason,
              ...(message.retryInMs > 0 && { retryInMs: message.retryInMs }),
            };
        this.#waiting.get(message.id)?.(answer);
      });
      session.onClose(() => {
        this.#session = undefined;
      });
      return session;
    })();
    // A failed connection is tried afresh by the next question.
    this.#session.catch(() => (this.#session = undefined));
    return this.#session;
  }
}
