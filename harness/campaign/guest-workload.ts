// The guest side of a campaign: a busybox sh script that writes files of random size
// and content on the ext4 file system at /mnt and, only after a file is durable
// (`sync`, or the `fsync` wrapper on the file and its directory), appends `name sha256`
// to a log on the same file system and syncs again. So every line of the log names a
// file the guest knew was durable before the line was written: after a takeover, a
// line whose file is missing or different is a lost write.
import type { NodeProcess } from "../node-process.ts";
import type { GuestShell } from "../testing/guest-files.ts";

export const MOUNT_POINT = "/mnt";
export const LOG_NAME = "campaign.log";
const SCRIPT_PATH = "/tmp/campaign-workload.sh";
const PID_FILE = "/tmp/campaign-workload.pid";
const STOP_FILE = "/tmp/campaign-stop";
const SUMS_FILE = "/tmp/campaign-sums";

/** One statement a line; no single quotes (they are sent inside '...'). */
const SCRIPT_LINES = [
  `echo $$ > ${PID_FILE}`,
  "i=0",
  `while [ ! -e ${STOP_FILE} ] && [ $i -lt 5000 ]; do`,
  "  i=$((i+1)); f=f$i",
  // 1 .. 196606 bytes: from a partial sector to many blocks.
  "  n=$(( $(od -An -N2 -tu2 /dev/urandom) * 3 + 1 ))",
  `  head -c $n /dev/urandom > ${MOUNT_POINT}/$f || break`,
  `  s=$(sha256sum ${MOUNT_POINT}/$f)`,
  // Alternate the two ways a program makes a file durable.
  `  if [ $((i % 2)) -eq 0 ]; then sync; else fsync ${MOUNT_POINT}/$f ${MOUNT_POINT}; fi`,
  `  echo "$f \${s%% *}" >> ${MOUNT_POINT}/${LOG_NAME}`,
  "  sync",
  "done",
  `rm -f ${PID_FILE}`,
];

export const WORKLOAD_SCRIPT = SCRIPT_LINES.join("\n") + "\n";

export function nodeShell(node: NodeProcess): GuestShell {
  return { exec: (command, options) => node.exec(command, options?.timeoutMs ?? 60_000) };
}

async function run(shell: GuestShell, command: string, timeoutMs: number): Promise<string> {
  const result = await shell.exec(command, { timeoutMs });
  if (result.exitCode !== 0) throw new Error(`guest command failed (${result.exitCode}): ${command}\n${result.output}`);
  return result.output;
}

/** Writes the script to /tmp, one line per exec (exec takes a single short line). */
export async function installWorkload(shell: GuestShell): Promise<void> {
  await run(shell, `rm -f ${SCRIPT_PATH} ${STOP_FILE} ${PID_FILE}`, 10_000);
  for (const line of SCRIPT_LINES) await run(shell, `printf '%s\\n' '${line}' >> ${SCRIPT_PATH}`, 10_000);
  const written = await run(shell, `cat ${SCRIPT_PATH}`, 10_000);
  if (written.replace(/\r/g, "") !== WORKLOAD_SCRIPT) throw new Error(`workload script arrived damaged:\n${written}`);
}

/** Starts the script detached from the shell's job control, all output discarded (it must not mix with exec's markers). */
export async function startWorkload(shell: GuestShell): Promise<void> {
  await run(shell, `(sh ${SCRIPT_PATH} </dev/null >/dev/null 2>&1 &)`, 20_000);
}

/** Asks the script to stop after its current file and waits (bounded) until it has. */
export async function stopWorkload(shell: GuestShell): Promise<void> {
  await run(shell, `touch ${STOP_FILE}; i=0; while [ -e ${PID_FILE} ] && [ $i -lt 60 ]; do sleep 0.5; i=$((i+1)); done; [ ! -e ${PID_FILE} ]`, 60_000);
}

/** Lines in the log, as this guest sees it. */
export async function logLineCount(shell: GuestShell, timeoutMs = 20_000): Promise<number> {
  const output = await run(shell, `echo "LINES $(cat ${MOUNT_POINT}/${LOG_NAME} 2>/dev/null | wc -l)"`, timeoutMs);
  return Number(/LINES (\d+)/.exec(output)?.[1] ?? Number.NaN);
}

/**
 * The log-count probe for output commit: the answer is searched for in the node's
 * *released* console output, which a protected primary lets out only after the
 * secondary acknowledged the sync covering it. The echo of the typed line cannot
 * match: there `$(cat` follows the tag, not digits.
 */
export function committedLogCountCommand(tag: string): string {
  return `echo "${tag} $(cat ${MOUNT_POINT}/${LOG_NAME} 2>/dev/null | wc -l)"`;
}

export function committedLogCounts(releasedOutput: string, tag: string): number[] {
  return [...releasedOutput.matchAll(new RegExp(`${tag} (\\d+)`, "g"))].map((match) => Number(match[1]));
}

export interface GuestVerdict {
  logLines: number;
  /** Log lines whose file is missing or has another sha256. */
  lost: number;
  /** The first few failing sha256sum lines, for the report. */
  failures: string[];
}

/** Checks every file the log names, inside the guest (one sha256sum -c over all of them). */
export async function verifyInGuest(shell: GuestShell): Promise<GuestVerdict> {
  await run(shell, `awk '{print $2"  ${MOUNT_POINT}/"$1}' ${MOUNT_POINT}/${LOG_NAME} > ${SUMS_FILE} 2>/dev/null || : > ${SUMS_FILE}`, 30_000);
  const counts = await run(shell, `echo "LOG $(wc -l < ${SUMS_FILE}) OK $(sha256sum -c ${SUMS_FILE} 2>/dev/null | grep -c ': OK$')"`, 120_000);
  const match = /LOG (\d+) OK (\d+)/.exec(counts);
  if (!match) throw new Error(`unexpected verification output: ${counts}`);
  const logLines = Number(match[1]);
  const lost = logLines - Number(match[2]);
  const failures =
    lost === 0 ? [] : (await shell.exec(`sha256sum -c ${SUMS_FILE} 2>&1 | grep -v ': OK$' | head -5`, { timeoutMs: 60_000 })).output.trim().split("\n");
  return { logLines, lost, failures };
}

export async function unmount(shell: GuestShell): Promise<void> {
  await run(shell, `umount ${MOUNT_POINT} && sync`, 60_000);
}
