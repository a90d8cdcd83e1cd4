// The guest's output that came with the syncs this replica applied: console bytes and frames
// the guest produced before the state the replica holds, which the primary lets out only once
// it hears the sync's ack. A primary that dies (or freezes) between the ack and its release
// takes them with it: nobody outside ever sees them, though the guest the survivor resumes
// believes it sent them; a client then waits for its TCP to send again (200 ms and more), a
// console line is never printed. A takeover lets out what the primary had not said it let
// out. At least once: what the primary released after its last word on it comes out twice
// (TCP and the network tolerate a repeated frame; a console may show a line twice).
import type { CarriedOutput, HeldOutputBatch } from "../../protocol/frames.ts";

/** Beyond this the oldest outputs are forgotten (a primary that never says it released them). */
export const MAX_CARRIED_OUTPUT_BYTES = 8 << 20;

export class CarriedOutputStore {
  /** Outputs not known to be released, numbered from #base. */
  #outputs: CarriedOutput[] = [];
  #base = 0;
  #bytes = 0;
  #dropped = 0;

  /** A new session's numbering starts at 0; what an earlier one carried is the past primary's. */
  reset(): void {
    this.#outputs = [];
    this.#base = 0;
    this.#bytes = 0;
  }

  /** An applied sync's held output, in order (numbering checked by the session's order). */
  add(batches: readonly HeldOutputBatch[]): void {
    for (const batch of batches) {
      // The first batch of a session may start anywhere at or after the base; a gap is impossible
      // under the session's order check, but keep the numbering exact if one came.
      if (batch.first !== this.#base + this.#outputs.length) {
        this.reset();
        this.#base = batch.first;
      }
      for (const output of batch.outputs) {
        this.#outputs.push(output);
        this.#bytes += output.bytes.length;
      }
      this.#forget(batch.released);
    }
    while (this.#bytes > MAX_CARRIED_OUTPUT_BYTES && this.#outputs.length > 0) {
      this.#bytes -= this.#outputs.shift()!.bytes.length;
      this.#base++;
      this.#dropped++;
    }
  }

  /** Outputs held now, and bytes. */
  get size(): { outputs: number; bytes: number; dropped: number } {
    return { outputs: this.#outputs.length, bytes: this.#bytes, dropped: this.#dropped };
  }

  /** What the primary had not said it let out, in order; the store is empty after. */
  take(): CarriedOutput[] {
    const outputs = this.#outputs;
    this.#base += outputs.length;
    this.#outputs = [];
    this.#bytes = 0;
    return outputs;
  }

  #forget(released: number): void {
    const count = Math.min(this.#outputs.length, released - this.#base);
    if (count <= 0) return;
    for (const output of this.#outputs.splice(0, count)) this.#bytes -= output.bytes.length;
    this.#base += count;
  }
}
