// The guest's NIC as the host sees it: raw Ethernet frames out (`onTransmit`) and in
// (`receive`), counted, with frames of impossible sizes dropped either way. Every Machine has
// one (`machine.network`) from its construction on, so that listeners can be in place before
// the guest first runs; it is attached to v86's NIC once the emulator exists. It also keeps,
// in the machine's state, the id of the last ingress frame handed to the guest: a machine
// restored from a capture tells a gateway which of its numbered frames that state has seen.
import type { JsonValue, MachineDevice } from "../config.ts";
import { MachineStateError, SnapshotError } from "../errors.ts";
import { RateLimitedLog, type LogSink } from "../rate-limited-log.ts";
import type { V86Nic } from "../v86-internals.ts";
import { ETHERNET_HEADER_BYTES, MAX_FRAME_BYTES, formatMac } from "./frame.ts";
import { NetworkMetrics, type ReceiveDropReason, type TransmitDropReason } from "./metrics.ts";

/** What became of a frame handed to `receive`: "taken" (in a receive buffer of the guest) or why it was dropped. */
export type ReceiveOutcome = "taken" | ReceiveDropReason;

/** Gets each frame the guest sends: its own copy, valid after the call. */
export type TransmitListener = (frame: Uint8Array) => void;

/** What the port needs of the emulator (Emulator has both). */
export interface NicHost {
  readonly nic: V86Nic;
  readonly atInstructionBoundary: boolean;
}

export interface NetworkPortOptions {
  /** The MAC the NIC gets when attached; a restore replaces it with the one in the state. */
  mac: Uint8Array;
  /** Where warnings about throwing listeners go (default console.warn, rate-limited). */
  log?: LogSink;
}

interface PortState {
  lastIngressId: number | null;
}

export class NetworkPort implements MachineDevice {
  readonly stateKey = "virtio-net";
  readonly metrics = new NetworkMetrics();
  readonly #listeners = new Set<TransmitListener>();
  readonly #log: RateLimitedLog;
  /** The NIC's MAC while detached: the configured one, or the last one the NIC had. */
  #mac: Uint8Array;
  #attached: { host: NicHost; unsubscribe: () => void } | undefined;
  #closed = false;
  #lastIngressId: number | null = null;

  constructor(options: NetworkPortOptions) {
    this.#mac = options.mac.slice();
    this.#log = new RateLimitedLog("virtio-net", options.log);
  }

  /** Connects the port to the emulator's NIC and gives it the MAC; before the CPU first runs. */
  attach(host: NicHost): void {
    if (this.#closed) throw new MachineStateError("NetworkPort.attach: the port is closed");
    if (this.#attached !== undefined) throw new Error("NetworkPort.attach: already attached to a NIC");
    host.nic.setMac(this.#mac);
    this.#attached = { host, unsubscribe: host.nic.onTransmit((frame) => this.#transmitted(frame)) };
  }

  /** The NIC's MAC as the guest sees it now (the configured one before boot), e.g. "52:54:00:12:34:56". */
  get mac(): string {
    return formatMac(this.#attached?.host.nic.mac ?? this.#mac);
  }

  /**
   * The id passed with the last frame handed to `receive` (whatever became of it), or null if
   * none was. Saved in snapshots and state captures: after a restore it names the last frame
   * the restored guest has seen, so a gateway resends only those with higher ids.
   */
  get lastIngressId(): number | null {
    return this.#lastIngressId;
  }

  /**
   * Calls `listener` with each frame the guest sends. It runs synchronously inside the guest's
   * instruction: it must not call back into the machine (queue the work instead). Returns a
   * function that unsubscribes. A listener that throws is counted and logged; the guest goes on.
   */
  onTransmit(listener: TransmitListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Whether `receive` would put a frame into a receive buffer now ("taken"), or why it would
   * drop it: "no-buffer" while the driver has none posted (it posts more as it runs), "not-ready"
   * before it is up. Changes nothing.
   */
  receiveReadiness(): "taken" | "no-buffer" | "not-ready" {
    const host = this.#attached?.host;
    return host === undefined || this.#closed ? "not-ready" : readiness(host.nic.receiveState());
  }

  /**
   * Gives one Ethernet frame (no FCS) to the guest. `id` numbers the gateway's ingress frames:
   * a safe integer above the previous one. Returns "taken" when the frame is in a receive buffer
   * of the guest's driver, else why it was dropped ("not-ready" also before the machine has an
   * emulator). Throws on a non-Uint8Array frame, an id that does not increase, a call from
   * inside a guest instruction (a transmit listener), or a destroyed machine.
   */
  receive(frame: Uint8Array, id: number): ReceiveOutcome {
    if (!(frame instanceof Uint8Array)) throw new TypeError("receive: the frame must be a Uint8Array");
    if (!isIngressId(id)) throw new RangeError(`receive: the ingress id must be a non-negative safe integer, got ${String(id)}`);
    if (this.#lastIngressId !== null && id <= this.#lastIngressId) {
      throw new RangeError(`receive: ingress id ${id} does not follow the last one, ${this.#lastIngressId}`);
    }
    if (this.#closed) throw new MachineStateError("receive: the machine is destroyed");
    const host = this.#attached?.host;
    if (host !== undefined && !host.atInstructionBoundary) {
      throw new MachineStateError("receive: called inside a guest instruction (from a transmit listener?); queue the frame and receive it afterwards");
    }
    this.#lastIngressId = id;
    const size = sizeProblem(frame);
    const outcome: ReceiveOutcome = size ?? (host === undefined ? "not-ready" : readiness(host.nic.receiveState()));
    if (outcome !== "taken") {
      this.metrics.receiveDropped[outcome]++;
      return outcome;
    }
    host!.nic.deliver(frame); // v86 copies it into guest RAM at once
    this.metrics.receivedFrames++;
    this.metrics.receivedBytes += frame.length;
    return outcome;
  }

  saveState(): JsonValue {
    const state: PortState = { lastIngressId: this.#lastIngressId };
    return state as unknown as JsonValue;
  }

  restoreState(state: JsonValue): void {
    const id: unknown = (state as Partial<PortState> | null)?.lastIngressId;
    if (typeof state !== "object" || state === null || Array.isArray(state) || !(id === null || isIngressId(id))) {
      throw new SnapshotError(`snapshot: state of ${this.stateKey} is damaged`);
    }
    this.#lastIngressId = id;
  }

  /** Lets go of the NIC and the listeners (the machine is destroyed); metrics and `mac` stay readable. */
  async close(): Promise<void> {
    if (this.#attached !== undefined) {
      try {
        this.#mac = this.#attached.host.nic.mac;
      } catch {
        // a torn-down emulator may not answer any more: keep the MAC known before
      }
      this.#attached.unsubscribe();
      this.#attached = undefined;
    }
    this.#closed = true;
    this.#listeners.clear();
  }

  #transmitted(view: Uint8Array): void {
    const size = sizeProblem(view);
    if (size !== undefined) {
      this.metrics.transmitDropped[size]++;
      return;
    }
    this.metrics.transmittedFrames++;
    this.metrics.transmittedBytes += view.length;
    for (const listener of this.#listeners) {
      try {
        listener(view.slice()); // v86's view is of a buffer it owns; each listener may keep or change its copy
      } catch (error) {
        this.metrics.listenerErrors++;
        this.#log.warn(`a transmit listener threw: ${(error as Error)?.message ?? String(error)}`);
      }
    }
  }
}

function isIngressId(id: unknown): id is number {
  return Number.isSafeInteger(id) && (id as number) >= 0;
}

function sizeProblem(frame: Uint8Array): TransmitDropReason | undefined {
  if (frame.length < ETHERNET_HEADER_BYTES) return "runt";
  if (frame.length > MAX_FRAME_BYTES) return "oversized";
  return undefined;
}

function readiness(state: ReturnType<V86Nic["receiveState"]>): "taken" | "no-buffer" | "not-ready" {
  return state === "ready" ? "taken" : state;
}
