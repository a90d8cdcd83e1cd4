// Counters of the guest's NIC, counted where frames pass (the port).

/** Why a frame the guest sent was not passed on. */
export type TransmitDropReason = "oversized" | "runt";

/**
 * Why a frame for the guest did not land: too large or too short, "no-buffer" when the driver
 * had no receive buffer posted (v86 would drop it), "not-ready" before the driver was up.
 */
export type ReceiveDropReason = TransmitDropReason | "no-buffer" | "not-ready";

export interface NetworkMetricsSnapshot {
  /** Frames the guest sent and the port passed on to its listeners, and their bytes. */
  transmittedFrames: number;
  transmittedBytes: number;
  /** Frames written into the guest's receive buffers, and their bytes. */
  receivedFrames: number;
  receivedBytes: number;
  transmitDropped: Record<TransmitDropReason, number>;
  receiveDropped: Record<ReceiveDropReason, number>;
  /** Transmit listeners that threw (the frame still went to the others). */
  listenerErrors: number;
}

export class NetworkMetrics implements NetworkMetricsSnapshot {
  transmittedFrames = 0;
  transmittedBytes = 0;
  receivedFrames = 0;
  receivedBytes = 0;
  transmitDropped: Record<TransmitDropReason, number> = { oversized: 0, runt: 0 };
  receiveDropped: Record<ReceiveDropReason, number> = { oversized: 0, runt: 0, "no-buffer": 0, "not-ready": 0 };
  listenerErrors = 0;

  snapshot(): NetworkMetricsSnapshot {
    return { ...this, transmitDropped: { ...this.transmitDropped }, receiveDropped: { ...this.receiveDropped } };
  }
}
