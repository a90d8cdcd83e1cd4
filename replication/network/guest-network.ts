// The guest's network, fixed so that it never depends on the host's addressing: the
// same numbers as QEMU's user networking (guest 10.0.2.15/24, gateway 10.0.2.2). The
// MACs are fixed too: the guest's survives a failover in the state image, and the
// gateway uses it to teach passt where frames go before the guest has sent any.
import { DEFAULT_MAC } from "../../emulator/net/frame.ts";
import { DEFAULT_MTU } from "./ethernet.ts";

export interface GuestNetwork {
  guestIp: string;
  prefixLength: number;
  gatewayIp: string;
  /** The guest NIC's MAC (v86's virtio-net, pinned at boot). */
  guestMac: string;
  /** The MAC the stack answers with for the gateway address. */
  gatewayMac: string;
  mtu: number;
}

export const DEFAULT_GUEST_NETWORK: Readonly<GuestNetwork> = Object.freeze({
  guestIp: "10.0.2.15",
  prefixLength: 24,
  gatewayIp: "10.0.2.2",
  guestMac: DEFAULT_MAC,
  // QEMU's slirp convention: 52:55 and then the gateway's IPv4 address.
  gatewayMac: "52:55:0a:00:02:02",
  mtu: DEFAULT_MTU,
});
