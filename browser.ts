// twinvm's browser-safe surface (`import ... from "twinvm/browser"`): the machine and its NIC,
// our virtio-blk disk with in-memory backends, the memory model, the replication
// engines and the browser WebSocket transport. Nothing here imports a Node module;
// `twinvm` (index.ts) adds the Node parts on top of this.
export { Machine, type MachineState, type BootResult } from "./emulator/machine.ts";
export {
  bytesImage,
  DEFAULT_CMDLINE,
  DEFAULTS,
  MEMORY_MIB_RANGE,
  type ImageSource,
  type MachineConfig,
  type MachineDevice,
  type DeviceFactory,
  type JsonValue,
  type NetworkConfig,
} from "./emulator/config.ts";
export { TwinvmError, ConfigError, ImageError, ConsoleTimeoutError, BootTimeoutError, SnapshotError, MachineStateError } from "./emulator/errors.ts";
export type { ExecResult, ConsoleMatch, WaitOptions, SerialConsole } from "./emulator/serial-console.ts";
export { BlockHook, type BlockIoEvent, type BlockIoListener, type BlockIoType, type GuestSegment } from "./emulator/block/hook.ts";
export { PAGE_SHIFT, PAGE_SIZE, SECTOR_SHIFT, SECTOR_SIZE } from "./emulator/units.ts";
export { BlockBackendError, type BlockBackend } from "./emulator/block/backend.ts";
export { MemoryBackend } from "./emulator/block/memory-backend.ts";
export { virtioBlkDisk, VirtioBlkDisk, type VirtioBlkDiskOptions } from "./emulator/virtio-blk/disk.ts";
export {
  NetworkPort,
  NetworkMetrics,
  DEFAULT_MAC,
  MAX_FRAME_BYTES,
  NETWORK_MTU,
  type ReceiveOutcome,
  type TransmitListener,
  type NetworkMetricsSnapshot,
  type ReceiveDropReason,
  type TransmitDropReason,
} from "./emulator/net/index.ts";
export { DirtyPageTracker, applyPages, type PageSet } from "./emulator/memory/index.ts";
export { captureStateParts, restoreStateParts } from "./emulator/state/index.ts";

export {
  PrimaryEngine,
  type DiskMode,
  type PrimaryState,
  type PrimaryOptions,
  type SecondaryLossPolicy,
  type SyncEvent,
} from "./replication/engine/primary/engine.ts";
export { SecondaryEngine, type SecondaryState, type SecondaryOptions } from "./replication/engine/secondary/engine.ts";
export { keepProtected, type KeepProtectedOptions, type Protector } from "./replication/engine/primary/keep-protected.ts";
export { BYTE_CATEGORIES, type ByteCategory } from "./replication/protocol/frames.ts";
export type { MetricsSnapshot } from "./replication/engine/metrics.ts";
export { systemClock, type Clock, type Timer } from "./replication/clock.ts";
export { handshake, type HandshakeOptions } from "./replication/channel/handshake.ts";
export type { ReplicationChannel } from "./replication/channel/channel.ts";
export { ProtocolError, type ProtocolErrorCode } from "./replication/protocol/errors.ts";
export { TransportError, type Transport, type TransportCloseInfo, type InboundMessage } from "./replication/transport/transport.ts";
export { createMemoryPair, type MemoryPair } from "./replication/transport/memory-pair.ts";
export { BrowserWsTransport, connectBrowserWebSocket, type BrowserConnectOptions } from "./replication/transport/browser-ws.ts";
export { NetworkUplink, type NetworkUplinkOptions, type UplinkState, type UplinkCounters, type FrameListener } from "./replication/network/uplink.ts";
export { GatewayCore, type GatewayCoreOptions, type GatewayCounters, type NodeSink, type FrameStack } from "./replication/network/gateway-core.ts";
export { NetworkLinkError, type LinkErrorCode } from "./replication/network/link-errors.ts";
export { DEFAULT_GUEST_NETWORK, type GuestNetwork } from "./replication/network/guest-network.ts";
