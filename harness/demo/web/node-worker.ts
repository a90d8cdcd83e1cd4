// One node of the pair in a dedicated module Worker: its own guest (or replica),
// its own thread, so syncs do not freeze the page and `terminate()` is a pulled plug.
import { fetchImage } from "../../../emulator/browser/fetch-image.ts";
import { BlockHook } from "../../../emulator/block/hook.ts";
import { MemoryBackend } from "../../../emulator/block/memory-backend.ts";
import type { MachineConfig } from "../../../emulator/config.ts";
import { Machine } from "../../../emulator/machine.ts";
import { virtioBlkDisk } from "../../../emulator/virtio-blk/disk.ts";
import { MessagePortTransport, type LinkShape } from "../../../replication/transport/message-port.ts";
import { DemoNode, type NodeStatus } from "./engine-adapter.ts";
import { FORMAT_COMMAND } from "./demo-guest.ts";
import type { GuestSetup, PageToWorker, WorkerToPage } from "./worker-protocol.ts";

/** How often the page gets metrics: the chart's resolution. */
const METRICS_INTERVAL_MS = 500;
/**
 * A new link's silence window, until the initial sync is done: the peer may block its
 * thread for seconds while it restores a snapshot, creates its machine or applies the
 * initial sync (1.9 s measured in headless Chromium on 2 cores), and it cannot send
 * keepalives meanwhile. A dead peer is then found this late, once, at start-up.
 */
const STARTUP_SILENCE_MS = 30_000;
/** Once the pair replicates: a pulled plug is found this fast (the engines' watchdogs allow 5 s). */
const REPLICATING_SILENCE_MS = 2_000;

const scope = self as unknown as {
  postMessage(message: WorkerToPage, transfer?: Transferable[]): void;
  onmessage: ((event: MessageEvent<PageToWorker>) => void) | null;
};
let node: DemoNode | undefined;
/** The link this node currently talks over (knobs apply to it). */
let link: MessagePortTransport | undefined;

function post(message: WorkerToPage, transfer: Transferable[] = []): void {
  scope.postMessage(message, transfer);
}

function openLink(port: MessagePort, shape: LinkShape, label: string): MessagePortTransport {
  link = new MessagePortTransport(port, { label, shape, silenceTimeoutMs: STARTUP_SILENCE_MS });
  return link;
}

function guestConfig(setup: GuestSetup, hook: BlockHook, disk: MemoryBackend): MachineConfig {
  const { files } = setup;
  return {
    wasm: fetchImage(files.wasm),
    bios: fetchImage(files.bios),
    kernel: fetchImage(files.kernel),
    initrd: fetchImage(files.initrd),
    memoryMiB: setup.memoryMiB,
    devices: [virtioBlkDisk({ backend: disk, id: "vda", hook })],
  };
}

function adopt(created: DemoNode): void {
  node = created;
  created.onStatus(reportStatus);
  created.onOutput((bytes) => post({ type: "output", bytes }));
  created.onSync((report) => post({ type: "sync", report }, [report.pages.buffer]));
  reportStatus(created.status);
  setInterval(() => post({ type: "metrics", metrics: created.metrics(), link: link && { ...link.stats } }), METRICS_INTERVAL_MS);
}

function reportStatus(status: NodeStatus): void {
  if (status.state === "protected" || status.state === "replicating") link?.setSilenceTimeout(REPLICATING_SILENCE_MS);
  post({ type: "status", status });
}

const log = (line: string) => post({ type: "log", line });

async function startPrimary(request: Extract<PageToWorker, { type: "start-primary" }>): Promise<void> {
  const { setup } = request;
  const started = performance.now();
  // The link first: the secondary's end must hear keepalives while this guest boots.
  const transport = openLink(request.port, setup.link, "link to the secondary");
  const hook = new BlockHook();
  let machine: Machine;
  if (request.boot === "snapshot") {
    post({ type: "phase", phase: "loading", detail: "downloading the booted guest's snapshot and disk" });
    const [snapshot, diskBytes] = await Promise.all([
      fetchImage(setup.files.snapshot, { gunzip: true }).load(),
      fetchImage(setup.files.disk, { gunzip: true }).load(),
    ]);
    post({ type: "phase", phase: "restoring", detail: `restoring a ${(snapshot.length / 1048576).toFixed(0)} MB snapshot` });
    machine = await Machine.fromSnapshot(snapshot, guestConfig(setup, hook, new MemoryBackend(diskBytes)));
  } else {
    machine = new Machine(guestConfig(setup, hook, new MemoryBackend(setup.diskBytes)));
    post({ type: "phase", phase: "booting", detail: "booting Linux from scratch" });
    const booting = machine.boot();
    const unsubscribe = streamConsoleWhileBooting(machine);
    try {
      await booting;
    } finally {
      unsubscribe();
    }
    post({ type: "phase", phase: "formatting", detail: "formatting /dev/vda and mounting it on /mnt" });
    const format = await machine.exec(FORMAT_COMMAND, { timeoutMs: 60_000 });
    if (format.exitCode !== 0) throw new Error(`formatting the disk failed: ${format.output}`);
  }
  post({ type: "timing", what: "guest-ready", ms: performance.now() - started });
  post({ type: "phase", phase: "connecting", detail: "initial sync: copying RAM, device state and disk to the secondary" });
  const created = DemoNode.runningGuest(machine, hook, { secret: setup.secret, log });
  adopt(created);
  await created.protect(transport, request.mode);
  post({ type: "phase", phase: "ready", detail: "protected" });
  machine.send("\n"); // a fresh prompt, through output commit like everything else
}

/** The console exists only once boot() created the emulator: poll for it, then stream boot messages to the page. */
function streamConsoleWhileBooting(machine: Machine): () => void {
  let unsubscribe: (() => void) | undefined;
  const poll = setInterval(() => {
    if (machine.state !== "booting" || unsubscribe !== undefined) return;
    try {
      unsubscribe = machine.console.onOutput((bytes) => post({ type: "output", bytes }));
      clearInterval(poll);
    } catch {
      // the emulator is still being created
    }
  }, 50);
  return () => {
    clearInterval(poll);
    unsubscribe?.();
  };
}

async function startSecondary(request: Extract<PageToWorker, { type: "start-secondary" }>): Promise<void> {
  const { setup } = request;
  // The link first: the primary's keepalives must find an answering end while the machine is created.
  const transport = openLink(request.port, setup.link, "link to the primary");
  post({ type: "phase", phase: "loading", detail: "creating an empty replica machine" });
  const hook = new BlockHook();
  const machine = await Machine.createBlank(guestConfig(setup, hook, new MemoryBackend(setup.diskBytes)));
  post({ type: "phase", phase: "connecting", detail: "waiting for the primary's initial sync" });
  adopt(await DemoNode.replica(machine, hook, transport, { secret: setup.secret, log }));
  post({ type: "phase", phase: "ready", detail: "replica attached" });
}

async function handle(request: PageToWorker): Promise<void> {
  switch (request.type) {
    case "start-primary":
      return startPrimary(request);
    case "start-secondary":
      return startSecondary(request);
    case "protect":
      if (node === undefined) throw new Error("protect: this node is still starting");
      return node.protect(openLink(request.port, request.link, "link to the new secondary"), request.mode);
    case "input":
      node?.send(request.bytes);
      return;
    case "link":
      link?.setShape(request.shape);
      return;
    case "promote":
      if (node === undefined) throw new Error("promote: this node is still starting");
      return node.promote();
    case "stall": {
      const until = performance.now() + request.ms;
      while (performance.now() < until) {
        // nothing runs on this thread: no timers, no messages
      }
      return;
    }
  }
}

scope.onmessage = (event) => {
  handle(event.data).catch((error: unknown) => post({ type: "error", message: (error as Error).message }));
};
