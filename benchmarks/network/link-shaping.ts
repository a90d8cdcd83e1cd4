// The network benchmark's links, inside a private network namespace (`unshare --net`, made
// by network.bench.ts): the replication link is shaped like the talk's Ethernet links
// (benchmarks/talk/links.ts: MTU 1500 and the same token bucket), and nothing else is. The
// client, passt's sockets and the nodes' gateway links share loopback with it, so the
// shaping is per port: an HTB root whose unclassified traffic goes out unshaped (HTB's
// direct queue), and one class, with the talk's tbf under it, for the packets from and to
// the secondary's listening port (the fault proxy's hop to the secondary: one shaped hop
// per direction, as one wire).
import { execFileSync } from "node:child_process";
import { tokenBucket, type LinkSpec } from "../talk/links.ts";

const LOOPBACK_MTU = 65536;
const ETHERNET_MTU = 1500;

const run = (command: string, args: string[]) => execFileSync(command, args, { stdio: ["ignore", "ignore", "pipe"] });

/**
 * A fresh namespace has only a loopback that is down. passt will not start without an
 * interface with a route out ("No external routable interface"), so one end of a veth pair
 * gets a documentation address (192.0.2.0/24) and the default route; nothing is behind it,
 * and the guest's services are reached through forwarded loopback ports only.
 */
export function prepareNamespace(): void {
  run("ip", ["link", "set", "lo", "up"]);
  run("ip", ["link", "add", "netbench0", "type", "veth", "peer", "name", "netbench1"]);
  run("ip", ["addr", "add", "192.0.2.1/24", "dev", "netbench0"]);
  run("ip", ["link", "set", "netbench0", "up"]);
  run("ip", ["link", "set", "netbench1", "up"]);
  run("ip", ["route", "add", "default", "via", "192.0.2.254", "dev", "netbench0"]);
}

/**
 * Shapes the traffic from and to `port` (the secondary's) to `link`; undefined rate or
 * port: nothing is shaped. Loopback's MTU follows the talk's rule (1500 on a shaped row, so
 * that the token bucket meets Ethernet-sized packets; 65536 unshaped), for every flow of
 * that row alike, the unreplicated baseline's too.
 */
export function shapeReplicationLink(link: LinkSpec, port: number | undefined): void {
  try {
    run("tc", ["qdisc", "del", "dev", "lo", "root"]);
  } catch {
    // nothing shaped yet
  }
  run("ip", ["link", "set", "lo", "mtu", String(link.bitsPerSecond === undefined ? LOOPBACK_MTU : ETHERNET_MTU)]);
  if (link.bitsPerSecond === undefined || port === undefined) return;
  // default 0: packets no filter claims skip the classes (HTB's direct queue, unshaped).
  run("tc", ["qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "0"]);
  // The class itself never limits (far above the link); the tbf under it is the link.
  run("tc", ["class", "add", "dev", "lo", "parent", "1:", "classid", "1:1", "htb", "rate", "100gbit", "quantum", "60000"]);
  run("tc", ["qdisc", "add", "dev", "lo", "parent", "1:1", "handle", "10:", ...tokenBucket(link.bitsPerSecond)]);
  for (const direction of ["sport", "dport"]) {
    run("tc", [
      "filter",
      "add",
      "dev",
      "lo",
      "parent",
      "1:",
      "protocol",
      "ip",
      "prio",
      "1",
      "u32",
      "match",
      "ip",
      direction,
      String(port),
      "0xffff",
      "flowid",
      "1:1",
    ]);
  }
}

/** Bytes and packets the link's token bucket passed (to show the shaping saw the replication traffic). */
export function shapedBytes(): { bytes: number; packets: number } | undefined {
  try {
    const text = execFileSync("tc", ["-s", "qdisc", "show", "dev", "lo"], { encoding: "utf8" });
    const match = /qdisc tbf 10:[^\n]*\n\s*Sent (\d+) bytes (\d+) pkt/.exec(text);
    return match ? { bytes: Number(match[1]), packets: Number(match[2]) } : undefined;
  } catch {
    return undefined;
  }
}

export function shapingDescription(): string {
  return (
    "the replication link alone shaped like the talk's Ethernet links: loopback MTU 1500 and, for packets from or to the secondary's port (u32 filters into an HTB class), " +
    `\`tbf ${tokenBucket(1e8).slice(1).join(" ")}\` at 100 Mbit/s (at 1 Gbit/s the burst is 250 us of the rate); the client, passt and the nodes' gateway links on the same loopback unshaped (HTB's direct queue)`
  );
}
