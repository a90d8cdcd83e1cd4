// The guest services the network benchmarks talk to, and the guest template they restore:
// busybox nc servers started at boot (the template's snapshot holds them running).
//   7  echo:    every byte back (`cat`), for round trips and the takeover stream;
//   9  sink:    reads to end of stream, then answers the byte count (`wc -c`): into the guest;
//   19 source:  reads a decimal count and a newline, then sends that many zero bytes: out of it.
import { createGuestTemplate, type GuestTemplate } from "../../harness/testing/template.ts";
import type { GuestOverlay } from "../../harness/overlay/archive.ts";

export const ECHO_PORT = 7;
export const SINK_PORT = 9;
export const SOURCE_PORT = 19;
export const GUEST_PORTS = [ECHO_PORT, SINK_PORT, SOURCE_PORT] as const;

const SOURCE_SCRIPT = "/opt/netbench/source.sh";

export const SERVICES: GuestOverlay = {
  files: { [SOURCE_SCRIPT]: 'read n\nexec head -c "$n" /dev/zero\n' },
  // nc's -e takes the rest of its command line as the program and its arguments.
  startup: `(nc -ll -p ${ECHO_PORT} -e cat &) && (nc -ll -p ${SINK_PORT} -e wc -c &) && (nc -ll -p ${SOURCE_PORT} -e sh ${SOURCE_SCRIPT} &)`,
};

/** Boots the default guest once (128 MiB, one 64 MiB disk) with the services running, and snapshots it. */
export function networkTemplate(): Promise<GuestTemplate> {
  return createGuestTemplate({ overlay: SERVICES, disks: [{ sizeBytes: 64 << 20 }] });
}
