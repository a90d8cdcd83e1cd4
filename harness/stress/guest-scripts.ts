// The guest side of a stress round (busybox sh). Each disk has a writer that makes files
// durable three ways in turn (dd conv=fsync; dd oflag=direct then fsync; a buffered write
// then sync), names each file after its md5 once it is durable, and only then appends the
// name to the disk's log (fsync'd). The finish script is the line a user types after a
// takeover: stop the writers (kill each and its running command, as `kill %1` would), check every logged file, unmount
// both disks, print the marker. A watchdog it starts prints the guest's own view (blocked
// tasks through sysrq, interrupts, processes) shortly before the host's deadline; each step
// prints the guest's uptime, so a slow answer shows which step took the time.

export const DISKS = ["a", "b"] as const;
export const MOUNT = (disk: (typeof DISKS)[number]) => `/mnt/${disk}`;
export const SCRIPT_DIR = "/opt/stress";
export const WRITER = `${SCRIPT_DIR}/writer.sh`;
export const FINISH = `${SCRIPT_DIR}/finish.sh`;
/** Printed by the finish script as its last line: `STRESS-DONE <problems>`. */
export const DONE_MARKER = "STRESS-DONE";
export const WATCHDOG_MARKER = "STRESS-WATCHDOG";

/**
 * writer.sh DIR NAME: writes files into DIR until /tmp/stress-stop exists or a write fails.
 * Each command that may block on the disk runs as a child whose pid is kept, so that the
 * finish line can kill it too (killing only the shell would leave it writing).
 */
export const WRITER_SCRIPT = `echo $$ > /tmp/stress-$2.pid
run() { "$@" & echo $! > /tmp/stress-$2.child; wait $!; }
i=0
while [ ! -e /tmp/stress-stop ]; do
  i=$((i+1)); t=$1/.tmp-$i
  n=$(( $(od -An -N1 -tu1 /dev/urandom) % 16 + 1 ))
  case $((i % 3)) in
    0) run dd if=/dev/urandom of=$t bs=4k count=$n conv=fsync 2>/dev/null ;;
    1) run dd if=/dev/urandom of=$t bs=4k count=$n oflag=direct 2>/dev/null && run fsync $t ;;
    *) run head -c $((n * 4096)) /dev/urandom > $t && run sync ;;
  esac || break
  s=$(md5sum < $t); s=\${s%% *}
  mv $t $1/f$i-$s && run fsync $1 && echo f$i-$s >> $1/log && run fsync $1/log || break
done
rm -f /tmp/stress-$2.pid /tmp/stress-$2.child
`;

/** finish.sh WATCHDOG_SECONDS: the line after the takeover. */
export const FINISH_SCRIPT = `(sleep $1; echo ${WATCHDOG_MARKER}; cat /proc/interrupts; ps; echo w > /proc/sysrq-trigger; dmesg | tail -50) &
wd=$!
t() { echo "STEP $1 $(cut -d' ' -f1 /proc/uptime)"; }
t start
touch /tmp/stress-stop
pids=$(cat /tmp/stress-*.pid /tmp/stress-*.child 2>/dev/null)
kill $pids 2>/dev/null
# A writer blocked in fsync dies only once its write completes (the host's deadline bounds this).
while :; do alive=0; for p in $pids; do kill -0 $p 2>/dev/null && alive=1; done; [ $alive = 0 ] && break; sleep 0.1; done
t stopped
bad=0
for d in ${DISKS.join(" ")}; do
  ok=0; wrong=0
  for f in $(cat /mnt/$d/log 2>/dev/null); do
    s=$(md5sum < /mnt/$d/$f 2>/dev/null); s=\${s%% *}
    if [ "$s" = "\${f#*-}" ]; then ok=$((ok+1)); else wrong=$((wrong+1)); echo "BAD /mnt/$d/$f"; fi
  done
  echo "FILES $d ok $ok wrong $wrong"; bad=$((bad+wrong))
done
t checked
umount ${DISKS.map(MOUNT).join(" ")} || { echo UMOUNT-FAILED; bad=$((bad+1)); }
t unmounted
kill $wd 2>/dev/null
echo ${DONE_MARKER} $bad
`;

/** The command that starts both writers, detached from the shell (their output must not mix with exec's markers). */
export const START_WRITERS = DISKS.map((disk) => `(sh ${WRITER} ${MOUNT(disk)} ${disk} </dev/null >/dev/null 2>&1 &)`).join("; ");

export interface FinishReport {
  /** Logged files whose content matches their name, per disk. */
  files: Record<(typeof DISKS)[number], { ok: number; wrong: number }>;
  unmounted: boolean;
  problems: number;
  /** Guest seconds each step took: stopping the writers, checking the files, unmounting. */
  stepSeconds: { stop: number; check: number; unmount: number } | null;
}

/** Reads the finish script's output; undefined if its marker is missing. */
export function parseFinish(output: string): FinishReport | undefined {
  const done = new RegExp(`${DONE_MARKER} (\\d+)`).exec(output);
  if (done === null) return undefined;
  const files = { a: { ok: 0, wrong: 0 }, b: { ok: 0, wrong: 0 } };
  for (const match of output.matchAll(/FILES ([ab]) ok (\d+) wrong (\d+)/g)) files[match[1] as "a" | "b"] = { ok: Number(match[2]), wrong: Number(match[3]) };
  const at = Object.fromEntries([...output.matchAll(/STEP (\w+) ([\d.]+)/g)].map((match) => [match[1]!, Number(match[2])]));
  const stepSeconds =
    at.start !== undefined && at.stopped !== undefined && at.checked !== undefined && at.unmounted !== undefined
      ? { stop: at.stopped - at.start, check: at.checked - at.stopped, unmount: at.unmounted - at.checked }
      : null;
  return { files, unmounted: !output.includes("UMOUNT-FAILED"), problems: Number(done[1]), stepSeconds };
}
