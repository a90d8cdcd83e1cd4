// What the engines need from a guest, and nothing more: the primary's view of a running
// machine (capture at an instruction boundary, its disks, its block requests and console)
// and the secondary's view of a replica that never runs until it takes over. Real machines
// are adapted in machine-guest.ts; engine tests use an in-memory fake.
import type { BlockBackend } from "../../emulator/block/backend.ts";
import type { BackendFailureHandler, BlockCompletionListener, BlockIoListener } from "../../emulator/block/hook.ts";
import type { PageChanges, PageChangeViews, PageSet, TrackerStats } from "../../emulator/memory/index.ts";
import type { StateChanges } from "../../emulator/state/state-parts.ts";

export interface GuestDisk {
  /** Names the disk to the peer (init-begin); both sides attach equal disks under equal names. */
  readonly name: string;
  readonly backend: BlockBackend;
  /** Resolves once every backend operation started so far has settled (whatever holds their completions). */
  idle(): Promise<void>;
}

/** The end of a full copy: what changed while it ran, and the whole device state. */
export interface FullCopyEnd {
  /** Pages written since their range was copied (`previous` is what was copied). */
  pages: PageChanges;
  /** The whole device state, as parts (copies). */
  state: Uint8Array[];
}

export interface PrimaryGuest {
  readonly memoryBytes: number;
  readonly disks: readonly GuestDisk[];
  /** Runs `work` at the guest's next instruction boundary without stopping it. */
  atNextBoundary<T>(work: () => T): Promise<T>;
  /** While on, the guest runs in short slices so that the peer's answers are taken sooner (syncs in flight). */
  eagerYield(on: boolean): void;
  /** Called when the guest's CPU halts, waiting for an interrupt: what it had to say (output) it has said for now. */
  onIdle(listener: () => void): () => void;
  /**
   * At a boundary: starts the full copy a new secondary starts from, taken while the guest
   * runs: `copyPages` hands RAM out range by range (non-zero pages only), `finishFullCopy`
   * (at a boundary) adds what the guest wrote meanwhile and the device state. Later captures
   * are changes since that end.
   */
  beginFullCopy(): void;
  /** Outside the guest's instructions: the next range's non-zero pages, at most `maxPages`; `done` once RAM is covered. */
  copyPages(maxPages: number): { pages: PageSet; done: boolean };
  finishFullCopy(): FullCopyEnd;
  /** At a boundary: the pages changed since the previous capture, as views (encode them before the guest runs again). */
  collectPages(): PageChangeViews;
  /** At the same boundary: the device-state parts changed since the previous capture. */
  captureState(): StateChanges;
  /** Guest RAM as it is now; read it at a boundary. */
  ram(): Uint8Array;
  /** Every block request at submission; a returned promise holds its completion. */
  onBlockRequest(listener: BlockIoListener): () => void;
  /** Every block request as it completes (a read's data has landed in guest memory). */
  onBlockCompleted(listener: BlockCompletionListener): () => void;
  /** A request the guest's disk failed: the handler may take it over (see BackendFailureHandler). */
  onBackendFailure(handler: BackendFailureHandler): () => void;
  /** Stops the guest at an instruction boundary (a handover); `resume` lets it run on. */
  pause(): Promise<void>;
  resume(): void;
  onOutput(listener: (bytes: Uint8Array) => void): () => void;
  /** Every Ethernet frame the guest's NIC transmits (a copy). */
  onFrame(listener: (frame: Uint8Array) => void): () => void;
  /** The id of the last ingress frame handed to the guest's NIC (null: none yet); it rides in the device state. */
  ingressWatermark(): number | null;
  /** Stops the guest for good (a fenced primary). */
  halt(): void;
  readonly trackerStats: TrackerStats | undefined;
  /** Frees what captures keep (shadow copies). */
  dispose(): void;
}

export interface ReplicaGuest {
  readonly memoryBytes: number;
  readonly disks: readonly GuestDisk[];
  /** The replica's RAM (it does not run until `start`). */
  ram(): Uint8Array;
  /** Takes over: loads the device state into the replica and runs it. */
  start(state: readonly Uint8Array[]): void;
}
