// A turn of the event loop: timers, I/O and the emulator's own slices run before what follows.
// Work that only awaits microtasks (a loop of boundary work outside the guest's slice, say)
// would otherwise starve them all: no heartbeats, no guest, for as long as the loop runs.

/** A macrotask without a timer's floor where there is one: setImmediate in Node. */
export const scheduleTurn: ((callback: () => void) => void) | undefined = (globalThis as { setImmediate?: (callback: () => void) => unknown }).setImmediate;

/** Resolves on a later turn of the event loop (setImmediate, else setTimeout 0). */
export function nextTurn(): Promise<void> {
  return new Promise((resolve) => (scheduleTurn !== undefined ? scheduleTurn(resolve) : setTimeout(resolve, 0)));
}
