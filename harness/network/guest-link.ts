// The guest's NIC joined to the network gateway, on the node that runs the guest. Ingress
// frames go into the NIC (with the gateway's ids, which ride in the guest's state); egress
// frames go out either straight (no engine protects the guest: `twinvm run`, or a survivor
// before it is protected again) or as the primary engine releases them (output commit), and
// the engine says which ingress frames a secondary's copy now holds, so the gateway forgets
// them. The guest never waits for the link: a frame the link cannot take is dropped and
// counted, as a full NIC would, and TCP recovers it.
import type { Machine } from "../../emulator/machine.ts";
import type { PrimaryEngine } from "../../replication/engine/primary/engine.ts";
import type { NetworkUplink, UplinkCounters, UplinkState } from "../../replication/network/uplink.ts";
import { createNodeUplink } from "./node-uplink.ts";

export interface GuestNetworkStatus {
  gateway: string;
  link: UplinkState;
  counters: UplinkCounters;
  /** Whether frames wait for the secondary (an engine holds them) or go straight out. */
  outputCommit: boolean;
}

export interface GuestLinkOptions {
  /** The gateway's ws:// URL. */
  url: string;
  secret: Uint8Array;
  nodeId: string;
  log?: (line: string) => void;
}

export class GuestNetworkLink {
  readonly #machine: Machine;
  readonly #uplink: NetworkUplink;
  readonly #url: string;
  #engine: PrimaryEngine | undefined;
  #unsubscribe: (() => void)[] = [];
  #closed = false;

  constructor(machine: Machine, options: GuestLinkOptions) {
    this.#machine = machine;
    this.#url = options.url;
    this.#uplink = createNodeUplink({ url: options.url, secret: options.secret, nodeId: options.nodeId });
    this.#uplink.onFrame((frame, id) => this.#ingress(frame, id));
    let last: UplinkState["kind"] | undefined;
    this.#uplink.onState((state) => {
      if (state.kind === last) return;
      last = state.kind;
      options.log?.(
        `network: ${state.kind === "down" ? `gateway link down: ${state.reason}` : state.kind === "connected" ? `attached to the gateway at epoch ${state.epoch} (${state.replay} frame(s) given again)` : "connecting to the gateway"}`,
      );
    });
    this.#route();
  }

  /** The guest runs here at `epoch`: attach to the gateway (a higher epoch replaces an older node there). */
  attach(epoch: number): void {
    this.#uplink.attach(epoch, this.#machine.network.lastIngressId ?? 0);
  }

  /** The engine that holds the guest's output from now on (undefined: none, frames go straight out). */
  useEngine(engine: PrimaryEngine | undefined): void {
    this.#engine = engine;
    this.#route();
  }

  status(): GuestNetworkStatus {
    return { gateway: this.#url, link: this.#uplink.state, counters: this.#uplink.counters(), outputCommit: this.#engine !== undefined };
  }

  /** Stops talking to the gateway (this node no longer runs the real guest: fenced, or shutting down). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
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
    this.#machine.network.receive(frame, id);
    if (this.#engine !== undefined && this.#engine.state !== "closed") this.#engine.ingressDelivered(id);
    else this.#uplink.committed(id);
  }
}
