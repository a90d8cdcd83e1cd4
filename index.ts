// twinvm's Node library (`import ... from "twinvm"`): everything in the browser
// entry, plus what needs Node: guest images and disk images from files, the
// WebSocket transport, secrets from files. The test API is `twinvm/testing`,
// the command line `twinvm/cli`.
export * from "./browser.ts";
export { fileImage, defaultGuest, DEFAULT_IMAGES_DIR, v86WasmPath } from "./emulator/node/images.ts";
export { FileBackend, type FileBackendOptions } from "./emulator/node/file-backend.ts";
export {
  listenReplication,
  connectReplication,
  isLoopbackHost,
  type ListenOptions,
  type ReplicationServer,
  type ConnectOptions,
} from "./replication/node/ws-transport.ts";
export { loadSecret, SecretError, SECRET_ENV, type SecretSource } from "./replication/node/secret.ts";
export { startGateway, type Gateway, type GatewayOptions, type GatewayEvent, type GatewayStatus } from "./harness/network/gateway.ts";
export { createNodeUplink } from "./harness/network/node-uplink.ts";
export { PasstError } from "./harness/network/passt.ts";
export { ForwardError, PortInUseError, parseForward, type ForwardSpec, type Forward } from "./harness/network/forwards.ts";
