// Per-disk counters, counted where the work happens (the device).

export interface BlockMetricsSnapshot {
  requests: number;
  reads: number;
  writes: number;
  flushes: number;
  getIds: number;
  bytesRead: number;
  bytesWritten: number;
  /** Requests refused as malformed (IOERR or UNSUPP written). */
  invalidRequests: number;
  /** Requests whose backend I/O failed. */
  backendErrors: number;
  /** Requests a hook gate rejected. */
  gateErrors: number;
  /** Times the driver broke the protocol so that the device needed a reset. */
  deviceNeedsReset: number;
}

export class BlockMetrics implements BlockMetricsSnapshot {
  requests = 0;
  reads = 0;
  writes = 0;
  flushes = 0;
  getIds = 0;
  bytesRead = 0;
  bytesWritten = 0;
  invalidRequests = 0;
  backendErrors = 0;
  gateErrors = 0;
  deviceNeedsReset = 0;

  get errors(): number {
    return this.invalidRequests + this.backendErrors + this.gateErrors + this.deviceNeedsReset;
  }

  snapshot(): BlockMetricsSnapshot {
    return { ...this };
  }
}
