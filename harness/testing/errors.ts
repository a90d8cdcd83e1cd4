// The test API's errors, in a module of their own so that catching them (the twinvm
// command does) does not load the emulator.

export class PairError extends Error {
  override name = "PairError";
}

/** A wait (takeover, protection, start) ran out of time; the message describes every node. */
export class PairTimeoutError extends PairError {
  override name = "PairTimeoutError";
}

/** exec or a file transfer while no node runs the guest (e.g. after killPrimary, before the takeover). */
export class NoGuestError extends PairError {
  override name = "NoGuestError";
}
