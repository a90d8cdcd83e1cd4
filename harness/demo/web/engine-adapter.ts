// The demo's only contact with the replication engines, the handshake and the
// channel: everything a worker needs to run one node, so that changes in
// replication/engine/ and replication/channel/ stay local to this file.
//
// A node holds a machine whose disk was built with a block hook. It starts as a
// replica (SecondaryEngine on a blank machine) or running the guest; a node that
// runs the guest (from the start, or after taking over) protects a new secondary
// with a PrimaryEngine. Switching the disk mode means a new PrimaryEngine and a
// fresh initial sync, because an engine's mode is fixed for its life.
import type { BlockHook } from "../../../emulator/block/hook.ts";
import type { Machine } from "../../../emulator/machine.ts";
import { handshake } from "../../../replication/channel/handshake.ts";
import type { ByteCategory } from "../../../replication/protocol/frames.ts";
import type { MetricsSnapshot } from "../../../replication/engine/metrics.ts";
import { PrimaryEngine, type DiskMode, type SyncEvent } from "../../../replication/engine/primary/engine.ts";
import { SecondaryEngine } from "../../../replication/engine/secondary/engine.ts";
import type { Transport } from "../../../replication/transport/transport.ts";

export type { ByteCategory, DiskMode, MetricsSnapshot };

/** How a logged disk request reached the secondary's disk. */
export type IoHow = "replayed" | "inline" | "block-copy" | "flush" | "read-replayed";

export interface IoReport {
  disk: number;
  how: IoHow;
  sector: number;
  sectors: number;
  /** Guest-physical buffers of a replayed or inline write (empty for block copies and flushes). */
  segments: { gpa: number; length: number }[];
}

/** One sync as the page shows it: the pages it carried, its bytes, its disk requests. */
export interface SyncReport {
  /** 0 is the initial sync. */
  seq: number;
  /** Indices of the 4 KiB guest pages carried (zero pages included). */
  pages: Uint32Array;
  bytes: Partial<Record<ByteCategory, number>>;
  io: IoReport[];
}

export type NodeRole = "primary" | "secondary";

export interface NodeStatus {
  role: NodeRole;
  /** The engine's state word ("protected", "replicating", "active", ...), or "running" with no engine. */
  state: string;
  reason: string;
  /** Whether the guest runs on this node (so console input may go to it). */
  runsGuest: boolean;
  epoch: number;
}

export interface NodeMetrics {
  snapshot: MetricsSnapshot | undefined;
  /** Changes when a new engine starts counting from zero (a new secondary, a mode switch, a takeover). */
  generation: number;
}

export interface NodeOptions {
  /** The pair's shared replication secret (16+ bytes). */
  secret: Uint8Array;
  log?: (line: string) => void;
}

/**
 * The engines' peer timeouts. The link (message-port.ts) closes itself after 2 s of silence;
 * both it and the engines' watchdogs discount their own stalls (a frozen background tab), so
 * the engines keep their usual timeouts.
 */
export const ENGINE_PEER_TIMEOUT_MS = 5_000;
/** How long a new replica waits for its primary's handshake (a boot from scratch in a loaded browser takes a minute or more). */
const SECONDARY_WAITS_FOR_PRIMARY_MS = 600_000;

export class DemoNode {
  readonly #machine: Machine;
  readonly #hook: BlockHook;
  readonly #options: NodeOptions;
  #primary: PrimaryEngine | undefined;
  #secondary: SecondaryEngine | undefined;
  #primaryMode: DiskMode | undefined;
  #generation = 0;
  #status: NodeStatus;
  readonly #statusListeners = new Set<(status: NodeStatus) => void>();
  readonly #outputListeners = new Set<(bytes: Uint8Array) => void>();
  readonly #syncListeners = new Set<(report: SyncReport) => void>();
  #unsubscribeOutput: (() => void) | undefined;

  private constructor(machine: Machine, hook: BlockHook, options: NodeOptions, status: NodeStatus) {
    this.#machine = machine;
    this.#hook = hook;
    this.#options = options;
    this.#status = status;
  }

  /** A node whose machine runs the guest (booted or restored); unprotected until `protect`. */
  static runningGuest(machine: Machine, hook: BlockHook, options: NodeOptions): DemoNode {
    const node = new DemoNode(machine, hook, options, {
      role: "primary",
      state: "running",
      reason: "guest running, no secondary yet",
      runsGuest: true,
      epoch: 1,
    });
    node.#feedConsoleDirectly();
    return node;
  }

  /** A replica on a blank machine, serving the primary at the other end of `transport`. */
  static async replica(machine: Machine, hook: BlockHook, transport: Transport, options: NodeOptions): Promise<DemoNode> {
    const node = new DemoNode(machine, hook, options, { role: "secondary", state: "waiting", reason: "waiting for the primary", runsGuest: false, epoch: 0 });
    const engine = new SecondaryEngine(machine, { peerTimeoutMs: ENGINE_PEER_TIMEOUT_MS, ...(options.log && { log: options.log }) });
    node.#secondary = engine;
    node.#generation++;
    engine.onStateChange((state, reason) => {
      if (state === "active") {
        // What the old primary printed for acknowledged syncs and may never have shown, first.
        for (const output of engine.takeCarriedOutput()) if (output.kind === "console") node.#emitOutput(output.bytes);
        node.#feedConsoleDirectly();
      }
      node.#setStatus({ role: "secondary", state, reason, runsGuest: state === "active", epoch: engine.epoch });
    });
    const channel = await handshake(transport, "secondary", options.secret, {
      epoch: Math.max(1, engine.epoch),
      nodeId: "demo-secondary",
      // A booting primary answers only once its guest is up; a dead one ends the link (silence) and so the wait.
      timeoutMs: SECONDARY_WAITS_FOR_PRIMARY_MS,
    });
    engine.onSync((event) => node.#emitSync(reportOf(event)));
    await engine.attach(channel);
    return node;
  }

  get status(): NodeStatus {
    return this.#status;
  }

  onStatus(listener: (status: NodeStatus) => void): () => void {
    this.#statusListeners.add(listener);
    return () => this.#statusListeners.delete(listener);
  }

  /** What this node's terminal shows: released by output commit while a primary engine runs, else the console as is. */
  onOutput(listener: (bytes: Uint8Array) => void): () => void {
    this.#outputListeners.add(listener);
    return () => this.#outputListeners.delete(listener);
  }

  onSync(listener: (report: SyncReport) => void): () => void {
    this.#syncListeners.add(listener);
    return () => this.#syncListeners.delete(listener);
  }

  metrics(): NodeMetrics {
    return { snapshot: (this.#primary ?? this.#secondary)?.metrics.snapshot(), generation: this.#generation };
  }

  /** Console input; refused unless the guest runs here. */
  send(bytes: Uint8Array): void {
    if (!this.#status.runsGuest) throw new Error(`console input refused: the guest does not run on this node (${this.#status.state})`);
    this.#machine.send(bytes);
  }

  /**
   * Protects the guest with the secondary at the other end of `transport`: re-protection
   * by the same engine after a loss, or a new engine (first secondary, a takeover, a mode switch).
   */
  async protect(transport: Transport, mode: DiskMode): Promise<void> {
    if (!this.#status.runsGuest) throw new Error(`protect: the guest does not run on this node (${this.#status.state})`);
    const epoch = this.#primary?.epoch ?? this.#secondary?.epoch ?? 1;
    let engine = this.#primary;
    const reusable = engine !== undefined && engine.state === "unprotected" && this.#primaryMode === mode;
    if (!reusable) {
      if (engine !== undefined)
        await this.#retirePrimaryEngine(engine, mode === this.#primaryMode ? "a new secondary replaces this one" : `switching the disk mode to ${mode}`);
      engine = this.#newPrimaryEngine(mode, epoch);
    }
    const channel = await handshake(transport, "primary", this.#options.secret, { epoch: engine!.epoch, nodeId: "demo-primary" });
    await engine!.protect(channel);
  }

  /** Manual failover: this replica takes over now (the primary, if it still listens, is fenced). */
  async promote(): Promise<void> {
    if (this.#secondary === undefined || this.#primary !== undefined) throw new Error("promote: only a secondary can be promoted");
    await this.#secondary.promote("promoted by the user");
  }

  /**
   * Closes an engine before another takes the machine. The old secondary hears goodbye and
   * does not take over. Until the closed link reaches the engine it still counts itself
   * protected, and a sync starting in that window finds its page tracker disposed and leaves
   * the guest paused: wait for it to settle, then make sure the guest runs.
   */
  async #retirePrimaryEngine(engine: PrimaryEngine, reason: string): Promise<void> {
    if (engine.state === "fenced") throw new Error("protect: this node was fenced (another node took over); its guest is stopped for good");
    this.#feedConsoleDirectly(); // nothing the guest prints while the engines change hands is lost
    await engine.close(reason);
    const deadline = performance.now() + 5000;
    while ((engine.state === "protected" || engine.state === "initial-sync") && performance.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 20));
    if (this.#machine.state === "paused") this.#machine.run();
  }

  #newPrimaryEngine(mode: DiskMode, epoch: number): PrimaryEngine {
    this.#unsubscribeOutput?.();
    this.#unsubscribeOutput = undefined;
    const engine = new PrimaryEngine(this.#machine, {
      mode,
      hook: this.#hook,
      epoch,
      peerTimeoutMs: ENGINE_PEER_TIMEOUT_MS,
      onSecondaryLoss: "continue",
      ...(this.#options.log && { log: this.#options.log }),
    });
    this.#primary = engine;
    this.#primaryMode = mode;
    this.#generation++;
    engine.outputs.onRelease("console", (bytes) => this.#emitOutput(bytes));
    engine.onStateChange((state, reason) => {
      if (engine !== this.#primary) return;
      this.#setStatus({ role: "primary", state, reason, runsGuest: state !== "fenced", epoch: engine.epoch });
    });
    this.#setStatus({ role: "primary", state: engine.state, reason: `${mode}: connecting to a new secondary`, runsGuest: true, epoch });
    return engine;
  }

  #feedConsoleDirectly(): void {
    this.#unsubscribeOutput?.();
    this.#unsubscribeOutput = this.#machine.console.onOutput((bytes) => this.#emitOutput(bytes));
  }

  #emitOutput(bytes: Uint8Array): void {
    for (const listener of this.#outputListeners) listener(bytes);
  }

  #emitSync(report: SyncReport): void {
    for (const listener of this.#syncListeners) listener(report);
  }

  #setStatus(status: NodeStatus): void {
    this.#status = status;
    for (const listener of this.#statusListeners) listener(status);
  }
}

/** The page's view of a sync the secondary applied (seq 0: the initial copy). */
function reportOf(event: SyncEvent): SyncReport {
  return {
    seq: event.seq,
    pages: event.pages,
    bytes: event.bytes,
    io: event.io.map(({ disk, delivery, sector, sectors, segments }) => ({ disk, how: delivery, sector, sectors, segments: [...segments] })),
  };
}
