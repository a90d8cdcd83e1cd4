// The links the talk benchmark runs over. Preferred: a private network namespace (made by
// the benchmark with `unshare --net`, root only) whose loopback the kernel shapes with tc's
// token bucket (a burst above lo's 64 KiB MTU, or it stalls); traffic never leaves the
// namespace. Fallback, labelled as such in the results: an in-process rate-limited proxy.
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
  if (link.bitsPerSecond === undefined) return;
  execFileSync("tc", ["qdisc", "add", "dev", "lo", "root", "tbf", "rate", `${link.bitsPerSecond / 1e6}mbit`, "burst", "1mb", "latency", "200ms"]);
}
