// Errors a user can act on: each names the thing that is wrong.

export class TwinvmError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A config value out of range or of the wrong kind. */
export class ConfigError extends TwinvmError {}

/** An image that is missing, unreadable, or not what its role needs. */
export class ImageError extends TwinvmError {
  constructor(
    readonly role: string,
    readonly location: string,
    reason: string,
    options?: ErrorOptions,
  ) {
    super(`${role} image ${location}: ${reason}`, options);
  }
}

/** The guest did not print what was awaited in time; carries the console's last lines. */
export class ConsoleTimeoutError extends TwinvmError {
  constructor(
    readonly waitedFor: string,
    readonly timeoutMs: number,
    readonly consoleTail: string,
  ) {
    super(
      `timed out after ${timeoutMs} ms waiting for ${waitedFor}; last console lines:\n` +
        (consoleTail.length > 0 ? consoleTail : "(the guest printed nothing)"),
    );
  }
}

/** The guest never printed its ready marker. */
export class BootTimeoutError extends ConsoleTimeoutError {}

/** A snapshot that is not ours, is damaged, or does not fit the machine config. */
export class SnapshotError extends TwinvmError {}

/** An operation on a machine in the wrong lifecycle state (e.g. after destroy). */
export class MachineStateError extends TwinvmError {}
