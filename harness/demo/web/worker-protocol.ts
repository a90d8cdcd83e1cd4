// Messages between the page and a node's worker (structured clone; ports transferred).
import type { LinkShape, LinkStats } from "../../../replication/transport/message-port.ts";
import type { GuestFiles } from "./demo-guest.ts";
import type { DiskMode, NodeMetrics, NodeStatus, SyncReport } from "./engine-adapter.ts";

export type BootFrom = "snapshot" | "fresh";

export interface GuestSetup {
  files: GuestFiles;
  memoryMiB: number;
  diskBytes: number;
  /** Shared replication secret of the pair (random per page load). */
  secret: Uint8Array;
  link: LinkShape;
}

export type PageToWorker =
  /** Boot (or restore) the guest, then protect it with the secondary at the end of `port`. */
  | { type: "start-primary"; setup: GuestSetup; boot: BootFrom; mode: DiskMode; port: MessagePort }
  /** Become a replica of the primary at the end of `port`. */
  | { type: "start-secondary"; setup: GuestSetup; port: MessagePort }
  /** Running the guest: protect it with a new secondary (re-protection, a takeover's new partner, a mode switch). */
  | { type: "protect"; mode: DiskMode; port: MessagePort; link: LinkShape }
  | { type: "input"; bytes: Uint8Array }
  | { type: "link"; shape: Partial<LinkShape> }
  | { type: "promote" }
  /** Fault injection: the worker's thread stands still for `ms`, as in a frozen or throttled background tab. */
  | { type: "stall"; ms: number };

export type WorkerToPage =
  /** Start-up progress, before the node exists. */
  | { type: "phase"; phase: "loading" | "booting" | "restoring" | "formatting" | "connecting" | "ready"; detail: string }
  | { type: "status"; status: NodeStatus }
  | { type: "output"; bytes: Uint8Array }
  | { type: "metrics"; metrics: NodeMetrics; link: LinkStats | undefined }
  | { type: "sync"; report: SyncReport }
  | { type: "timing"; what: "guest-ready"; ms: number }
  | { type: "log"; line: string }
  /** The node cannot go on (or a request failed): said to the student as is. */
  | { type: "error"; message: string };
