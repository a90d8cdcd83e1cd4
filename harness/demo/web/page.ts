// The demo page: starts the nodes in their workers, joins them with a MessagePort
// link, and wires the terminals, the live views and the controls.
import type { LinkShape, LinkStats } from "../../../replication/transport/message-port.ts";
import { checkCapabilities } from "./capabilities.ts";
import type { DiskMode, NodeMetrics, NodeStatus } from "./engine-adapter.ts";
import { DEMO_DISK_BYTES, DEMO_MEMORY_MIB, GUEST_FILES, WORKLOADS, type WorkloadName } from "./demo-guest.ts";
import { IoLog } from "./views/io-log.ts";
import { PageMap } from "./views/page-map.ts";
import { TerminalPane } from "./views/terminal-pane.ts";
import { renderCounters } from "./views/counters.ts";
import { RateMeter, TrafficChart } from "./views/traffic-chart.ts";
import type { BootFrom, GuestSetup, PageToWorker, WorkerToPage } from "./worker-protocol.ts";

interface NodeHandle {
  name: string;
  worker: Worker;
  pane: TerminalPane;
  alive: boolean;
  phase: string;
  status: NodeStatus | undefined;
  metrics: NodeMetrics | undefined;
  link: LinkStats | undefined;
}

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const element = document.getElementById(id);
  if (element === null) throw new Error(`page: no #${id}`);
  return element as T;
};

const params = new URLSearchParams(location.search);
const bootFrom: BootFrom = params.get("boot") === "fresh" ? "fresh" : "snapshot";
let mode: DiskMode = params.get("mode") === "dirty-block-copy" ? "dirty-block-copy" : "logging-replay";
const linkShape: LinkShape = { latencyMs: 0, bandwidthBitsPerSecond: 0, cut: false };
const nodes: NodeHandle[] = [];
const timings: Record<string, number> = {};
const secret = crypto.getRandomValues(new Uint8Array(32));
let nextName = 0;

const panes = [new TerminalPane($("term-0"), $("term-0-title")), new TerminalPane($("term-1"), $("term-1-title"))];
const chart = new TrafficChart($("chart"));
const pageMap = new PageMap($<HTMLCanvasElement>("page-map"), DEMO_MEMORY_MIB << 20);
const ioLog = new IoLog($("io-log"));

function setup(): GuestSetup {
  return { files: GUEST_FILES, memoryMiB: DEMO_MEMORY_MIB, diskBytes: DEMO_DISK_BYTES, secret, link: { ...linkShape } };
}

function spawn(pane: TerminalPane): NodeHandle {
  const worker = new Worker(new URL("./node-worker.js", import.meta.url), { type: "module", name: `node ${String.fromCharCode(0x41 + nextName)}` });
  const node: NodeHandle = {
    name: String.fromCharCode(0x41 + nextName++),
    worker,
    pane,
    alive: true,
    phase: "starting",
    status: undefined,
    metrics: undefined,
    link: undefined,
  };
  nodes.push(node);
  pane.onInput = undefined;
  pane.reset();
  worker.onmessage = (event: MessageEvent<WorkerToPage>) => fromWorker(node, event.data);
  worker.onerror = (event) => {
    event.preventDefault();
    report(`node ${node.name}: ${event.message}`);
  };
  render();
  return node;
}

function post(node: NodeHandle, message: PageToWorker, transfer: Transferable[] = []): void {
  node.worker.postMessage(message, transfer);
}

function fromWorker(node: NodeHandle, message: WorkerToPage): void {
  if (!node.alive) return;
  switch (message.type) {
    case "phase":
      node.phase = message.detail;
      break;
    case "status":
      node.status = message.status;
      node.pane.onInput = message.status.runsGuest ? (bytes) => post(node, { type: "input", bytes }) : undefined;
      if (message.status.state === "protected") noteProtected();
      if (message.status.state === "active" && timings["takeover"] === undefined && timings["plugPulledAt"] !== undefined) {
        timings["takeover"] = performance.now() - timings["plugPulledAt"];
      }
      node.pane.note(`node ${node.name}: ${message.status.role} ${message.status.state}: ${message.status.reason}`);
      break;
    case "output":
      node.pane.write(message.bytes);
      return;
    case "metrics":
      node.metrics = message.metrics;
      node.link = message.link;
      if (node === activeNode()) chartPoint(node);
      break;
    case "sync":
      pageMap.show(message.report);
      ioLog.show(message.report);
      return;
    case "timing":
      timings[message.what] = message.ms;
      break;
    case "log":
      console.info(`node ${node.name}: ${message.line}`);
      return;
    case "error":
      report(`node ${node.name}: ${message.message}`);
      break;
  }
  render();
}

/** Boot-to-protected counts from the navigation (performance's time origin), as a student waits. */
function noteProtected(): void {
  if (timings["bootToProtected"] === undefined) timings["bootToProtected"] = performance.now();
}

/** The node that runs the guest and protects it (the newest epoch wins in a split brain). */
function activeNode(): NodeHandle | undefined {
  return nodes.filter((n) => n.alive && n.status?.runsGuest).sort((a, b) => (b.status!.epoch ?? 0) - (a.status!.epoch ?? 0))[0];
}

function replicaNode(): NodeHandle | undefined {
  return nodes.find((n) => n.alive && n.status?.role === "secondary" && !n.status.runsGuest);
}

function linkedPair(): { primaryPort: MessagePort; secondaryPort: MessagePort } {
  const channel = new MessageChannel();
  return { primaryPort: channel.port1, secondaryPort: channel.port2 };
}

function start(): void {
  const { primaryPort, secondaryPort } = linkedPair();
  const primary = spawn(panes[0]!);
  const secondary = spawn(panes[1]!);
  post(secondary, { type: "start-secondary", setup: setup(), port: secondaryPort }, [secondaryPort]);
  post(primary, { type: "start-primary", setup: setup(), boot: bootFrom, mode, port: primaryPort }, [primaryPort]);
}

/** A fresh replica for the node running the guest: re-protection, after a takeover, or in another disk mode. */
function newSecondary(): void {
  const primary = activeNode();
  if (primary === undefined) return report("no node runs the guest: nothing to protect");
  const pane = panes.find((p) => p !== primary.pane)!;
  const occupant = nodes.filter((n) => n.pane === pane).at(-1);
  // The pane's old node goes. A replica hears goodbye from the primary first (no takeover
  // follows); a node still running the guest there is the other half of a split brain.
  if (occupant?.alive) retire(occupant, occupant.status?.runsGuest ? "shut down: the other half of a split brain makes room" : "replaced by a new secondary");
  // A new secondary comes with a new cable.
  setLink({ cut: false });
  const { primaryPort, secondaryPort } = linkedPair();
  const secondary = spawn(pane);
  post(secondary, { type: "start-secondary", setup: setup(), port: secondaryPort }, [secondaryPort]);
  post(primary, { type: "protect", mode, port: primaryPort, link: { ...linkShape } }, [primaryPort]);
}

function retire(node: NodeHandle, why: string): void {
  node.worker.terminate();
  node.alive = false;
  node.pane.note(`node ${node.name}: ${why}`);
  render();
}

function pullThePlug(): void {
  const primary = activeNode();
  if (primary === undefined) return report("no node runs the guest");
  timings["plugPulledAt"] = performance.now();
  delete timings["takeover"];
  retire(primary, "PLUG PULLED (worker terminated)");
}

function setLink(shape: Partial<LinkShape>): void {
  Object.assign(linkShape, shape);
  for (const node of nodes) if (node.alive) post(node, { type: "link", shape });
  render();
}

function runWorkload(name: WorkloadName): void {
  const node = activeNode();
  if (node === undefined) return report("no node runs the guest");
  post(node, { type: "input", bytes: new TextEncoder().encode(`${WORKLOADS[name]}\n`) });
}

// ------------------------------------------------------------ live numbers

const rates = new RateMeter();

function chartPoint(node: NodeHandle): void {
  const snapshot = node.metrics?.snapshot;
  if (snapshot === undefined) return;
  // A new engine (new secondary, mode switch, takeover) counts from zero: a new source.
  const point = rates.sample(`${node.name}/${node.metrics!.generation}`, snapshot, performance.now() / 1000);
  if (point !== undefined) chart.push(point);
}

function render(): void {
  nodes.forEach((node) => {
    if (!node.alive) return;
    const status = node.status;
    const label = status === undefined ? node.phase : `${status.role}, ${status.state}${status.runsGuest ? ", runs the guest" : ""}`;
    node.pane.title.textContent = `node ${node.name}: ${label}`;
    node.pane.title.dataset["state"] = status?.state ?? "starting";
  });
  for (const pane of panes) {
    const owner = nodes.filter((n) => n.pane === pane).at(-1);
    if (owner !== undefined && !owner.alive) {
      pane.title.textContent = `node ${owner.name}: gone`;
      pane.title.dataset["state"] = "gone";
    }
  }
  const elapsed = (performance.now() / 1000).toFixed(0);
  const protectedMs = timings["bootToProtected"];
  $("progress").textContent =
    protectedMs !== undefined
      ? `protected ${(protectedMs / 1000).toFixed(1)} s after the page opened (${bootFrom === "snapshot" ? "from the prebuilt snapshot" : "booted from scratch"})`
      : `${elapsed} s: ${nodes.map((n) => `node ${n.name}: ${n.status?.state ?? n.phase}`).join(" · ")}`;
  const takeover = timings["takeover"];
  $("takeover").textContent =
    takeover === undefined ? "" : `plug pulled → secondary running the guest in ${(takeover / 1000).toFixed(1)} s (2 s of link silence, then the takeover)`;
  renderCounters(
    $("counters"),
    nodes.filter((n) => n.alive && n.metrics?.snapshot !== undefined).map((n) => ({ name: n.name, snapshot: n.metrics!.snapshot!, link: n.link })),
  );
  $<HTMLButtonElement>("cut").textContent = linkShape.cut ? "Reconnect the link" : "Cut the link";
  for (const input of document.querySelectorAll<HTMLInputElement>("input[name=mode]")) input.checked = input.value === mode;
}

function report(message: string): void {
  const item = document.createElement("li");
  item.textContent = message;
  $("messages").append(item);
}

// ------------------------------------------------------------ wiring

function wireControls(): void {
  for (const input of document.querySelectorAll<HTMLInputElement>("input[name=mode]")) {
    input.addEventListener("change", () => {
      if (!input.checked || input.value === mode) return;
      mode = input.value as DiskMode;
      newSecondary();
    });
  }
  $<HTMLSelectElement>("bandwidth").addEventListener("change", (event) =>
    setLink({ bandwidthBitsPerSecond: Number((event.target as HTMLSelectElement).value) }),
  );
  $<HTMLSelectElement>("latency").addEventListener("change", (event) => setLink({ latencyMs: Number((event.target as HTMLSelectElement).value) }));
  $("write-files").addEventListener("click", () => runWorkload("write-files"));
  $("fio").addEventListener("click", () => runWorkload("fio"));
  $("pull-plug").addEventListener("click", pullThePlug);
  $("cut").addEventListener("click", () => setLink({ cut: !linkShape.cut }));
  $("promote").addEventListener("click", () => {
    const replica = replicaNode();
    if (replica === undefined) return report("no secondary to promote");
    post(replica, { type: "promote" });
  });
  $("new-secondary").addEventListener("click", newSecondary);
  $<HTMLAnchorElement>("boot-other").href = bootFrom === "snapshot" ? "?boot=fresh" : "?boot=snapshot";
  $("boot-other").textContent = bootFrom === "snapshot" ? "boot from scratch instead" : "start from the prebuilt snapshot instead";
  new ResizeObserver(() => chart.resize($("chart").clientWidth)).observe($("chart"));
}

/** For the end-to-end test and the curious: read-only views of the page's state. */
const inspect = {
  nodes: () =>
    nodes.map((n) => ({
      name: n.name,
      alive: n.alive,
      phase: n.phase,
      status: n.status,
      metrics: n.metrics?.snapshot,
      generation: n.metrics?.generation,
      link: n.link,
    })),
  transcript: (name: string) => nodes.find((n) => n.name === name)?.pane.transcript ?? "",
  timings: () => ({ ...timings }),
  mode: () => mode,
  /** Stalls every node's thread for `ms`, as a frozen background tab does (for the tests). */
  stallWorkers: (ms: number) => {
    for (const node of nodes) if (node.alive) post(node, { type: "stall", ms });
  },
};
(window as unknown as { twinvmDemo: typeof inspect }).twinvmDemo = inspect;

const capabilities = checkCapabilities();
for (const warning of capabilities.warnings) report(warning);
if (capabilities.missing.length > 0) {
  for (const problem of capabilities.missing) report(problem);
  $("progress").textContent = "This browser cannot run the demo (see below).";
  document.body.dataset["blocked"] = "true";
} else {
  wireControls();
  start();
  setInterval(render, 1000);
}
