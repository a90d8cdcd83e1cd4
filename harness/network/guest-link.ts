// The guest's NIC joined to the network gateway, on the node that runs the guest. Ingress
// frames go into the NIC (with the gateway's ids, which ride in the guest's state); egress
// frames go out either straight (no engine protects the guest: `twinvm run`, or a survivor
// before it is protected again) or as the primary engine releases them (output commit), and
// the engine says which ingress frames a secondary's copy now holds, so the gateway forgets
// them. The guest never waits for the link: egress frames wait in the uplink's bounded
// backlog while it (re)attaches, and beyond it are dropped and counted, as a full NIC would
// drop them, and TCP recovers them. Ingress frames that find no receive buffer wait in a
// bounded FIFO, however long the guest takes to post more (it may be paused for a capture or
// a copy: a frame dropped by a clock costs passt a 2 s retransmission, and the duplicate ACKs
// it causes make passt resend its whole window, again and again). The FIFO keeps one copy of
// a TCP segment: a retransmission of one already waiting is dropped.
import type { Machine } from "../../emulator/machine.ts";
import type { PrimaryEngine } from "../../replication/engine/primary/engine.ts";
import { describeUplinkState, type NetworkUplink, type UplinkCounters, type UplinkState } from "../../replication/network/uplink.ts";
import { tcpSegmentKey } from "../../replication/network/tcp-segment.ts";
import { createNodeUplink } from "./node-uplink.ts";

export interface GuestNetworkStatus {
  gateway: string;
  link: UplinkState;
  counters: UplinkCounters;
  /** Whether frames wait for the secondary (an engine holds them) or go straight out. */
  outputCommit: boolean;
  /** Ingress at the guest's NIC: frames it took, dropped (by reason; "fifo-full" and "duplicate" here), and waiting for a buffer. */
  nic: { received: number; dropped: Record<string, number>; waiting: number };
}

export interface GuestLinkOptions {
  /** The gateway's ws:// URL. */
  url: string;
  secret: Uint8Array;
  nodeId: string;
  log?: (line: string) => void;
}

/** Ingress frames kept while the guest's driver has no receive buffer free (a NIC's FIFO). */
const INGRESS_FIFO_FRAMES = 512;
/** How often the FIFO looks for a buffer again: at once while the guest refills its ring, then less eagerly (it may be paused or without a driver). */
const INGRESS_RETRY_MS = { soon: 1, later: 10, laterAfterMs: 200 } as const;

export class GuestNetworkLink {
  readonly #machine: Machine;
  readonly #uplink: NetworkUplink;
  readonly #url: string;
  #engine: PrimaryEngine | undefined;
  #unsubscribe: (() => void)[] = [];
  #closed = false;
  readonly #fifo: { frame: Uint8Array; id: number; since: number; segment: string | undefined }[] = [];
  /** The TCP segments waiting in the FIFO (tcpSegmentKey). */
  readonly #waitingSegments = new Set<string>();
  #retry: ReturnType<typeof setTimeout> | undefined;
  /** Ingress frames dropped because the FIFO was full. */
  #fifoDropped = 0;
  /** Ingress frames dropped because they repeat a TCP segment waiting in the FIFO. */
  #duplicatesDropped = 0;

  constructor(machine: Machine, options: GuestLinkOptions) {
    this.#machine = machine;
    this.#url = options.url;
    this.#uplink = createNodeUplink({ url: options.url, secret: options.secret, nodeId: options.nodeId });
    this.#uplink.onFrame((frame, id) => this.#ingress(frame, id));
    let last: UplinkState["kind"] | undefined;
    this.#uplink.onState((state) => {
      if (state.kind === last) return;
      last = state.kind;
      options.log?.(`network: ${describeUplinkState(state)}`);
    });
    this.#route();
  }

  /** The guest may run here later (a secondary): dial and authenticate now, so that attach() is one message. */
  standby(): void {
    this.#uplink.standby();
  }

  /** The guest runs here at `epoch`: attach to the gateway (a higher epoch replaces an older node there). */
  attach(epoch: number): void {
    this.#uplink.attach(epoch, this.#machine.network.lastIngressId ?? 0);
  }

  /** Frames the guest sent before the state it runs from, which its old primary held (a takeover's): out first, once attached. */
  sendHeld(frames: readonly Uint8Array[]): void {
    if (frames.length > 0 && !this.#closed) this.#uplink.send(frames);
  }

  /** The engine that holds the guest's output from now on (undefined: none, frames go straight out). */
  useEngine(engine: PrimaryEngine | undefined): void {
    this.#engine = engine;
    this.#route();
  }

  status(): GuestNetworkStatus {
    const metrics = this.#machine.network.metrics;
    return {
      gateway: this.#url,
      link: this.#uplink.state,
      counters: this.#uplink.counters(),
      outputCommit: this.#engine !== undefined,
      nic: {
        received: metrics.receivedFrames,
        dropped: { ...metrics.receiveDropped, "fifo-full": this.#fifoDropped, duplicate: this.#duplicatesDropped },
        waiting: this.#fifo.length,
      },
    };
  }

  /** Stops talking to the gateway (this node no longer runs the real guest: fenced, or shutting down). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#retry);
    this.#fifo.length = 0;
    this.#waitingSegments.clear();
    for (const unsubscribe of this.#unsubscribe.splice(0)) unsubscribe();
    this.#uplink.close();
  }

  #route(): void {
    for (const unsubscribe of this.#unsubscribe.splice(0)) unsubscribe();
    if (this.#closed) return;
    const engine = this.#engine;
    if (engine === undefined) {
      this.#unsubscribe.push(this.#machine.network.onTransmit((frame) => this.#uplink.send([frame])));
      return;
    }
    this.#unsubscribe.push(
      engine.outputs.onRelease("frame", (frame) => this.#uplink.send([frame])),
      engine.onIngressCommitted((id) => this.#uplink.committed(id)),
    );
  }

  #ingress(frame: Uint8Array, id: number): void {
    if (this.#closed) return;
    // A dropped frame's id need not reach the guest: ids only increase.
    const segment = tcpSegmentKey(frame);
    if (segment !== undefined && this.#waitingSegments.has(segment)) {
      this.#duplicatesDropped++;
      return;
    }
    if (this.#fifo.length >= INGRESS_FIFO_FRAMES) {
      // Full, as a NIC's FIFO fills: the newest frame is lost.
      this.#fifoDropped++;
      return;
    }
    this.#fifo.push({ frame, id, since: performance.now(), segment });
    if (segment !== undefined) this.#waitingSegments.add(segment);
    this.#drain();
  }

  /** Hands the guest what it has buffers for, in order; the rest waits for buffers. */
  #drain(): void {
    this.#retry = undefined;
    while (this.#fifo.length > 0 && !this.#closed) {
      const next = this.#fifo[0]!;
      if (this.#machine.network.receiveReadiness() === "no-buffer") {
        const waited = performance.now() - next.since;
        this.#retry ??= setTimeout(() => this.#drain(), waited < INGRESS_RETRY_MS.laterAfterMs ? INGRESS_RETRY_MS.soon : INGRESS_RETRY_MS.later);
        return;
      }
      this.#fifo.shift();
      if (next.segment !== undefined) this.#waitingSegments.delete(next.segment);
      try {
        this.#machine.network.receive(next.frame, next.id);
      } catch {
        // The machine is gone (destroyed while frames waited): nothing more to give it.
        this.#fifo.length = 0;
        this.#waitingSegments.clear();
        return;
      }
      if (this.#engine !== undefined && this.#engine.state !== "closed") this.#engine.ingressDelivered(next.id);
      else this.#uplink.committed(next.id);
    }
  }
}
