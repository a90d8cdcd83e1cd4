// Every state change of an engine goes through one function that checks it against a
// table of legal transitions (as QEMU's COLO does with failover_set_state): an illegal
// change is a bug, and it shows where it happens instead of as a stuck guest later.

export type TransitionTable<S extends string> = Readonly<Record<S, readonly S[]>>;

export class IllegalTransitionError extends Error {
  override name = "IllegalTransitionError";
}

export class StateMachine<S extends string> {
  #state: S;
  readonly #listeners = new Set<(state: S, reason: string, from: S) => void>();

  constructor(
    private readonly what: string,
    private readonly table: TransitionTable<S>,
    initial: S,
  ) {
    this.#state = initial;
  }

  get state(): S {
    return this.#state;
  }

  is(...states: S[]): boolean {
    return states.includes(this.#state);
  }

  /** Moves to `to`; throws IllegalTransitionError when the table does not allow it from here. */
  go(to: S, reason: string): void {
    const from = this.#state;
    if (!this.table[from].includes(to)) throw new IllegalTransitionError(`${this.what}: ${from} -> ${to} is not a legal transition (${reason})`);
    this.#state = to;
    for (const listener of this.#listeners) listener(to, reason, from);
  }

  onChange(listener: (state: S, reason: string, from: S) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
}
