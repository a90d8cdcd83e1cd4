// twinvm's test API (`import { startPair } from "twinvm/testing"`): a replicated
// pair of real guests for failover tests, usable from mocha, vitest or node:test.
// See the README ("Testing your software's failover") and examples/failover.test.mjs.
export { startPair, withPair, Pair, type PairEvent, type PairStatus, type PairArtifacts } from "./pair.ts";
export { PairError, PairTimeoutError, NoGuestError } from "./errors.ts";
export { PairNode, type NodeRole } from "./pair-node.ts";
export { createGuestTemplate, GuestTemplate, type TemplateOptions, type TemplateGuest } from "./template.ts";
export { PairOptionError, type PairOptions, type DiskSpec } from "./options.ts";
export { readGuestFile, GuestFileError, type GuestShell } from "./guest-files.ts";
export { UploadError, MAX_UPLOAD_BYTES } from "../guest-upload.ts";
export { StartupCommandError } from "./startup-check.ts";
export { buildOverlayArchive, OverlayError, type GuestOverlay, type OverlayArchive } from "../overlay/archive.ts";
export type { NodeInspection, NodeStatus } from "../control-request.ts";
export type { MachineInspection } from "../../emulator/machine.ts";
export type { SyncReport } from "../engines.ts";
export type { CutKind } from "../fault-proxy.ts";
export type { MetricsSnapshot } from "../../replication/engine/metrics.ts";
export type { DiskMode, SecondaryLossPolicy } from "../../replication/engine/primary/engine.ts";
