// The links the talk benchmark runs over. Preferred: a private network namespace (made by
// the benchmark with `unshare --net`, root only) whose loopback the kernel shapes like an
// Ethernet link: 1500-byte frames and tc's token bucket with a burst of a few frames, so a
// message takes its serialization time on the wire. (A 1 MB burst over lo's 64 KiB frames
// capped only the average: any message under 1 MB crossed at loopback speed, 0.3 ms for
// 70 KB "at 100 Mbit/s" where a wire takes 5.6.) Traffic never leaves the namespace.
// Fallback, labelled as such in the results: an in-process rate-limited proxy.
import { execFileSync } from "node:child_process";

export interface LinkSpec {
  name: string;
  /** undefined: not shaped. */
  bitsPerSecond: number | undefined;
}

export const LINKS: readonly LinkSpec[] = [
  { name: "unshaped", bitsPerSecond: undefined },
  { name: "1 Gbit/s", bitsPerSecond: 1e9 },
  { name: "100 Mbit/s", bitsPerSecond: 1e8 },
];

export type Shaping = "netns-tc" | "proxy";

/** Whether this process may make a private network namespace and shape it (root, unshare, ip, tc). */
export function canUseNamespaces(): { ok: true } | { ok: false; why: string } {
  if (process.getuid?.() !== 0) return { ok: false, why: "not running as root (unshare --net needs it)" };
  for (const tool of ["unshare", "ip", "tc"]) {
    try {
      execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" });
    } catch {
      return { ok: false, why: `${tool} is not installed (util-linux, iproute2)` };
    }
  }
  try {
    execFileSync("unshare", ["--net", "--", "true"], { stdio: "ignore" });
  } catch (error) {
    return { ok: false, why: `unshare --net failed here: ${(error as Error).message.split("\n")[0]}` };
  }
  return { ok: true };
}

/** Inside the namespace: loopback up, shaped to `link` (both directions: it is one interface). */
export function shapeLoopback(link: LinkSpec): void {
  execFileSync("ip", ["link", "set", "lo", "up"]);
  try {
    execFileSync("tc", ["qdisc", "del", "dev", "lo", "root"], { stdio: "ignore" });
  } catch {
    // nothing shaped yet
  }
  execFileSync("ip", ["link", "set", "lo", "mtu", String(link.bitsPerSecond === undefined ? LOOPBACK_MTU : ETHERNET_MTU)]);
  if (link.bitsPerSecond === undefined) return;
  execFileSync("tc", ["qdisc", "add", "dev", "lo", "root", ...tokenBucket(link.bitsPerSecond)]);
}

const LOOPBACK_MTU = 65536;
const ETHERNET_MTU = 1500;

/** tc's arguments after `root`: the rate, and a burst of 3 frames or 250 us at the rate (timer slack at 1 Gbit/s). */
export function tokenBucket(bitsPerSecond: number): string[] {
  const burstBytes = Math.max(3 * (ETHERNET_MTU + 14), Math.round((bitsPerSecond / 8) * 250e-6));
  return ["tbf", "rate", `${bitsPerSecond / 1e6}mbit`, "burst", String(burstBytes), "latency", "200ms"];
}

/** How the results describe the shaping. */
export function shapingDescription(): string {
  const example = tokenBucket(1e8).join(" ");
  return `its loopback shaped like an Ethernet link: MTU ${ETHERNET_MTU} and \`tc qdisc add dev lo root ${example}\` (100 Mbit/s; at 1 Gbit/s the burst is 250 us of the rate), so each message takes its serialization time, both directions`;
}
