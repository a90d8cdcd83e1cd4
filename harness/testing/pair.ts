// A replicated pair for tests, in the spirit of Testcontainers: `startPair()` starts
// a secondary and a primary as two node processes (replica-node.ts) linked through a
// fault proxy on loopback, boots (or restores) the guest and waits until the
// secondary protects it. The test then runs commands and moves files in the guest,
// injects faults (SIGKILL either node, cut or stall the link, cut it in the middle of
// a sync), waits for the takeover or for re-protection, reads status and metrics,
// and `stop()`s: every process ends and the temporary folder goes, also when the
// test failed (and, as a last resort, when the test process exits).
//
// The pair heals (unless `reprotect: false`): after a takeover the survivor gets a
// fresh secondary and protects the running guest again; a lost secondary is replaced
// behind the primary's link, which the primary keeps dialling.
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { DEFAULTS } from "../../emulator/config.ts";
import type { MetricsSnapshot } from "../../replication/engine/metrics.ts";
import type { NodeInspection, NodeStatus } from "../control-request.ts";
import type { SyncReport } from "../engines.ts";
import { FaultProxy, type CutKind } from "../fault-proxy.ts";
import { NodeProcess } from "../node-process.ts";
import type { NodeConfig } from "../replica-node.ts";
import { removeDirNow, track } from "./cleanup.ts";
import { NoGuestError, PairError, PairTimeoutError } from "./errors.ts";
import { readGuestFile, type GuestShell } from "./guest-files.ts";
import { ARBITRATED_PEER_TIMEOUT_MS, checkPairOptions, DEFAULT_PEER_TIMEOUT_MS, DEFAULT_START_TIMEOUT_MS, forwardSpecs, type PairOptions } from "./options.ts";
import { startGateway, type Gateway, type GatewayStatus } from "../network/gateway.ts";
import { loadSecret } from "../../replication/node/secret.ts";
import { askWitness, WitnessCore } from "../../replication/arbiter/witness.ts";
import type { WitnessQuestion, WitnessReply } from "../witness/ipc-witness.ts";
import { captureDir, freshImages, prepareDisks, prepareOverlay, privateDir, writeSecret, type PreparedDisks } from "./pair-files.ts";
import { PairNode, type NodeRole } from "./pair-node.ts";
import { checkStartupCommand } from "./startup-check.ts";
import { copyTemplateDisks } from "./template.ts";

/** What happens in a pair, in order; `--json` prints these. */
export type PairEvent =
  | { type: "node-started"; node: string; role: NodeRole; pid: number | undefined }
  /** Progress of a node before its engine runs: "booting", "restoring", "connecting", "ready". */
  | { type: "phase"; node: string; phase: string }
  | { type: "state"; node: string; engine: NodeRole; state: string; reason: string }
  /** A secondary took over: it runs the guest now. */
  | { type: "takeover"; from: string; to: string; failovers: number }
  | { type: "secondary-lost"; node: string }
  /** A fresh secondary was started to protect the guest again. */
  | { type: "reprotecting"; primary: string; secondary: string }
  | { type: "protected"; primary: string; secondary: string }
  | { type: "reprotect-failed"; primary: string; error: string }
  | { type: "node-exited"; node: string; code: number | null }
  | { type: "sync"; node: string; report: SyncReport }
  | { type: "console"; node: string; text: string }
  /** The arbiter's witness answered a node: a takeover's claim, or a lease renewal it refused. */
  | { type: "witness"; node: string; op: "claim" | "renew" | "hold"; epoch: number; granted: boolean; reason?: string };

export interface PairStatus {
  /** The primary's guest is acknowledged by a replicating secondary. */
  protected: boolean;
  /** Takeovers so far. */
  failovers: number;
  primary: NodeStatus;
  secondary?: NodeStatus;
}

/** What `stop({keepFiles: true})` leaves: the folder with the disk images, and each node's log and console transcript. */
export interface PairArtifacts {
  dir: string;
  nodes: { name: string; startedAs: NodeRole; log: string; console: string; disks: readonly string[] }[];
}

const LOG_LINES_IN_ERRORS = 12;

export class Pair implements GuestShell {
  /** The pair's private temporary folder (secret, disk images, sockets). */
  readonly dir: string;
  readonly #options: PairOptions;
  readonly #name: string;
  readonly #nodes: PairNode[] = [];
  readonly #proxies = new Set<FaultProxy>();
  readonly #listeners = new Set<(event: PairEvent) => void>();
  readonly #waiters = new Set<() => void>();
  #primary: PairNode | undefined;
  #secondary: PairNode | undefined;
  #nodeConfig: Omit<NodeConfig, "role" | "disks" | "name"> | undefined;
  #diskSizes: number[] = [];
  #generation = 1;
  /** performance.now() when the pair was made: the artifacts' state times count from it. */
  readonly #startedAt = performance.now();
  #failovers = 0;
  /** Failovers counted when the last fault was injected (waitForTakeover waits for more). */
  #failoversAtFault = 0;
  #healing: Promise<void> | undefined;
  #lastHealError: string | undefined;
  #stopping = false;
  #stopped: Promise<PairArtifacts | undefined> | undefined;
  /** The arbiter's witness, when asked for: this process outlives either node. */
  readonly #witness: WitnessCore | undefined;
  /** The network gateway (passt) in this process, when forwards were asked for: it outlives either node. */
  #gateway: Gateway | undefined;
  readonly #untrack: () => void;
  /** Nodes freezePrimary() SIGSTOPped and thaw() has not resumed. */
  readonly #frozen = new Set<PairNode>();

  /** The arbiter's witness (an arbitrated pair only): who holds the guest at which epoch, on a lease or not. */
  get witness(): { readonly epoch: number; readonly holder: string | undefined; readonly leased: boolean } | undefined {
    return this.#witness;
  }

  private constructor(dir: string, options: PairOptions) {
    this.dir = dir;
    this.#options = options;
    this.#name = options.name ?? "pair";
    this.#witness = options.arbiter === true ? new WitnessCore() : undefined;
    this.#untrack = track({
      disposeNow: () => {
        for (const node of this.#nodes) if (node.running) node.process.child.kill("SIGKILL");
        // passt also exits when its frame socket closes with this process; this is quicker.
        if (this.#gateway !== undefined) killQuietly(this.#gateway.passtPid);
        removeDirNow(this.dir);
      },
    });
  }

  /**
   * Starts a pair and waits until the guest is protected; on failure everything
   * started is stopped and the error describes the nodes. `onEvent` hears the pair's
   * events from the very start (the nodes starting, the boot), before this resolves.
   */
  static async start(options: PairOptions = {}, onEvent?: (event: PairEvent, pair: Pair) => void): Promise<Pair> {
    checkPairOptions(options);
    const pair = new Pair(await privateDir(options.workDir, "pair"), options);
    if (onEvent) pair.onEvent((event) => onEvent(event, pair));
    try {
      await pair.#start();
      return pair;
    } catch (error) {
      const detail = error instanceof PairError ? "" : `\n${pair.describe()}`;
      await pair.stop();
      throw new PairError(`starting the pair failed: ${(error as Error).message}${detail}`, { cause: error });
    }
  }

  // ------------------------------------------------------------ who is who

  /** The node running the guest now (the last one that did, if none does). */
  get primary(): PairNode {
    return this.#primary!;
  }

  /** The node keeping the replica now, if any. */
  get secondary(): PairNode | undefined {
    return this.#secondary;
  }

  /** Every node started, in order. */
  get nodes(): readonly PairNode[] {
    return this.#nodes;
  }

  get failovers(): number {
    return this.#failovers;
  }

  /** The secondary acknowledges the primary's guest (and no re-protection is under way). */
  get isProtected(): boolean {
    return this.#primary !== undefined && this.#primary.isProtected && this.#secondary?.secondaryState === "replicating";
  }

  onEvent(listener: (event: PairEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  // ------------------------------------------------------------ the guest

  /** Runs one shell command line (at most 900 characters) in the guest; resolves with its output and exit code. */
  async exec(command: string, options: { timeoutMs?: number } = {}): Promise<{ output: string; exitCode: number }> {
    const node = this.#guestNode();
    const timeoutMs = options.timeoutMs ?? 60_000;
    return node.process.request<{ output: string; exitCode: number }>({ type: "exec", command, timeoutMs }).catch((error: Error) => {
      // A command that never finishes is mostly the pair's doing (a fence, a held write): say what every node did.
      throw new PairError(`exec on ${node.name} failed: ${error.message}\n${this.describe()}`, { cause: error });
    });
  }

  /** Writes a file in the guest (parent folders made), replacing it only once all of it arrived. Up to 16 MiB. */
  async writeFile(path: string, data: string | Uint8Array, options: { mode?: number; timeoutMs?: number } = {}): Promise<void> {
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    await this.#guestNode().process.request({ type: "upload", path, base64: Buffer.from(bytes).toString("base64"), ...options });
  }

  readFile(path: string): Promise<Uint8Array> {
    return readGuestFile(this, path);
  }

  async readTextFile(path: string): Promise<string> {
    return new TextDecoder().decode(await this.readFile(path));
  }

  // ------------------------------------------------------------ the network

  /** The host port forwarded to `guestPort` (the free one picked for a forward asked with port 0). Needs `forwards`. */
  hostPort(guestPort: number): number {
    if (this.#gateway === undefined) throw new PairError('this pair has no network: give startPair forwards, e.g. { forwards: ["0:80"] }');
    return this.#gateway.hostPort(guestPort);
  }

  /** The network gateway's counters (frames each way, held for replay, dropped by reason, the attached node), if the pair has one. */
  network(): GatewayStatus | undefined {
    return this.#gateway?.counters();
  }

  // ------------------------------------------------------------ faults

  /** SIGKILLs the node running the guest; resolves when it has exited. The secondary takes over (see waitForTakeover). */
  async killPrimary(): Promise<PairNode> {
    const node = this.#requirePrimary();
    this.#markFault();
    await node.process.kill("SIGKILL");
    return node;
  }

  /** SIGKILLs the secondary; the primary runs on per onSecondaryLoss, and the pair replaces the secondary (unless reprotect is off). */
  async killSecondary(): Promise<PairNode> {
    const node = this.#secondary;
    if (node === undefined) throw new PairError("there is no secondary to kill");
    this.#markFault();
    await node.process.kill("SIGKILL");
    return node;
  }

  /**
   * SIGSTOPs the node running the guest, as a host that freezes: it neither talks nor renews
   * a lease, and its socket stays open (the peer timeout notices). thaw() resumes it.
   */
  freezePrimary(): PairNode {
    const node = this.#requirePrimary();
    this.#markFault();
    node.process.child.kill("SIGSTOP");
    this.#frozen.add(node);
    return node;
  }

  /** SIGCONTs a node freezePrimary() stopped (an old primary then finds it was replaced). */
  thaw(node: PairNode): void {
    if (!this.#frozen.delete(node)) throw new PairError(`${node.name} is not frozen`);
    if (node.running) node.process.child.kill("SIGCONT");
  }

  /**
   * Breaks the primary's replication link: `reset` closes it at once, `silent` stops the bytes
   * (the peer timeouts notice). New connections are refused until healLink().
   */
  cutLink(kind: CutKind = "reset"): void {
    this.#markFault();
    this.#requireLink().cut(kind);
  }

  /**
   * Cuts the primary's link between two frames of the next sync burst (the first
   * big frame reaches the secondary, the rest and the commit do not) and resolves
   * once it did. Needs guest activity (a write or output) to start a sync.
   */
  async cutLinkMidSync(options: { timeoutMs?: number } = {}): Promise<{ frameBytes: number }> {
    this.#markFault();
    const armed = this.#requireLink().cutMidSync();
    const timeoutMs = options.timeoutMs ?? 30_000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      return await Promise.race([
        armed.done,
        new Promise<never>(
          (_, reject) =>
            (timer = setTimeout(
              () => reject(new PairTimeoutError(`no sync went over the link within ${timeoutMs} ms (is the guest writing?)\n${this.describe()}`)),
              timeoutMs,
            )),
        ),
      ]);
    } finally {
      clearTimeout(timer);
      armed.cancel();
    }
  }

  /** Every link carries bytes and accepts connections again (an old primary reaching the survivor is then fenced). */
  healLink(): void {
    for (const proxy of this.#proxies) proxy.heal();
  }

  /** The primary's link stops moving bytes without closing; past peerTimeoutMs both sides count the peer as lost. */
  stallLink(): void {
    this.#markFault();
    this.#requireLink().stall();
  }

  resumeLink(): void {
    for (const proxy of this.#proxies) proxy.resume();
  }

  // ------------------------------------------------------------ waiting

  /** Resolves when a secondary took over since the last fault (at once if it already has) and runs the guest. */
  async waitForTakeover(options: { timeoutMs?: number } = {}): Promise<PairNode> {
    const after = this.#failoversAtFault;
    await this.#until(
      () => this.#failovers > after && this.#primary!.runsGuest,
      options.timeoutMs ?? 60_000,
      "takeover",
      () => {
        if (this.#failovers > after) return undefined;
        const secondary = this.#secondary;
        return secondary === undefined || !secondary.running ? "no secondary is left to take over" : undefined;
      },
    );
    return this.#primary!;
  }

  /** Resolves when the guest is protected by a replicating secondary (after a takeover or a lost secondary: once re-protected). */
  async waitForProtected(options: { timeoutMs?: number } = {}): Promise<void> {
    await this.#until(
      () => this.isProtected && this.#healing === undefined,
      options.timeoutMs ?? this.#startTimeoutMs,
      "protected guest",
      () => {
        if (!this.#primary!.running) return `${this.#primary!.name} is not running`;
        if (this.#secondary === undefined && this.#healing === undefined) {
          return this.#lastHealError !== undefined
            ? `re-protection failed: ${this.#lastHealError}`
            : this.#options.reprotect === false
              ? "there is no secondary and reprotect is off"
              : undefined;
        }
        return undefined;
      },
    );
  }

  // ------------------------------------------------------------ status

  async status(): Promise<PairStatus> {
    const primary = this.#requirePrimary();
    const [primaryStatus, secondaryStatus] = await Promise.all([
      primary.process.request<NodeStatus>({ type: "status" }),
      this.#secondary?.running ? this.#secondary.process.request<NodeStatus>({ type: "status" }).catch(() => undefined) : Promise.resolve(undefined),
    ]);
    return { protected: this.isProtected, failovers: this.#failovers, primary: primaryStatus, ...(secondaryStatus && { secondary: secondaryStatus }) };
  }

  /**
   * What a node's guest is doing now (default: the node running it, or the last one that did):
   * CPU and interrupts, each disk's requests in flight with their age, the console's last lines.
   * For a test whose guest stopped answering; see NodeInspection.
   */
  inspect(node: PairNode = this.#requirePrimary()): Promise<NodeInspection> {
    return node.process.request<NodeInspection>({ type: "inspect" });
  }

  /** The replication metrics of the node running the guest. */
  metrics(): Promise<MetricsSnapshot> {
    return this.#requirePrimary().process.metrics();
  }

  /** Every node: name, role, pid, engine states, and the last lines of its log. */
  describe(): string {
    const lines = this.#nodes.map((node) => {
      const states = node.process.stateLog.map((entry) => `${entry.engine === node.startedAs ? "" : `${entry.engine}:`}${entry.state}`).join(" > ") || "none";
      const tail = node.log
        .trimEnd()
        .split("\n")
        .slice(-LOG_LINES_IN_ERRORS)
        .map((line) => `    | ${line}`)
        .join("\n");
      const role = node === this.#primary ? "primary now" : node === this.#secondary ? "secondary now" : "former";
      return `  ${node.name} (${role}, pid ${node.pid}, ${node.running ? "running" : "exited"}): states ${states}${tail ? `\n${tail}` : ""}`;
    });
    if (this.#lastHealError !== undefined) lines.push(`  last re-protection error: ${this.#lastHealError}`);
    return `nodes:\n${lines.join("\n")}`;
  }

  // ------------------------------------------------------------ stop

  /**
   * Stops every node (a clean shutdown, SIGKILL after 3 s) and the link proxies, and
   * removes the pair's folder, or with `keepFiles` keeps it with each node's log and
   * console transcript written beside the disk images (returned). Safe to call twice.
   */
  stop(options: { keepFiles?: boolean } = {}): Promise<PairArtifacts | undefined> {
    this.#stopping = true;
    this.#changed();
    this.#stopped ??= (async () => {
      // A stopped process cannot end itself gracefully.
      for (const node of this.#frozen) if (node.running) node.process.child.kill("SIGCONT");
      this.#frozen.clear();
      await Promise.all(this.#nodes.map((node) => node.process.stop(3000)));
      await Promise.all([...this.#proxies].map((proxy) => proxy.close()));
      await this.#gateway?.close();
      try {
        if (!options.keepFiles) {
          removeDirNow(this.dir);
          return undefined;
        }
        return await this.#writeArtifacts();
      } finally {
        this.#untrack();
      }
    })();
    return this.#stopped;
  }

  // ------------------------------------------------------------ internals

  get #startTimeoutMs(): number {
    return this.#options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
  }

  async #start(): Promise<void> {
    const options = this.#options;
    const template = options.template;
    const memoryMiB = template?.memoryMiB ?? options.memoryMiB ?? DEFAULTS.memoryMiB;
    const secretFile = await writeSecret(this.dir);
    const overlayArchive = template ? template.overlayArchive : await prepareOverlay(this.dir, options.overlay, memoryMiB);
    const disks: PreparedDisks = template ? await copyTemplateDisks(template, this.dir) : await prepareDisks(this.dir, options.disks);
    this.#diskSizes = disks.sizes;
    const kernelArgs = template ? template.kernelArgs : options.kernelArgs;
    const forwards = forwardSpecs(options);
    if (forwards.length > 0) {
      this.#gateway = await startGateway({
        forwards,
        secret: await loadSecret({ file: secretFile }),
        ...(options.capturePackets === true && { passt: { pcapFile: join(await captureDir(this.dir), "network.pcap") } }),
      });
    }
    this.#nodeConfig = {
      mode: options.mode ?? "logging-replay",
      secretFile,
      memoryMiB,
      peerTimeoutMs: options.peerTimeoutMs ?? (options.arbiter === true ? ARBITRATED_PEER_TIMEOUT_MS : DEFAULT_PEER_TIMEOUT_MS),
      metricsIntervalMs: 0,
      runDir: options.runDir ?? join(this.dir, "run"),
      ...(options.onSecondaryLoss !== undefined && { onSecondaryLoss: options.onSecondaryLoss }),
      ...(options.syncMode !== undefined && { syncMode: options.syncMode }),
      ...(options.syncIntervalMs !== undefined && { syncIntervalMs: options.syncIntervalMs }),
      ...(options.outputCoalesceMs !== undefined && { outputCoalesceMs: options.outputCoalesceMs }),
      ...(this.#gateway !== undefined && { gateway: this.#gateway.url }),
      ...(this.#witness !== undefined && { witness: "parent" as const }),
      ...(overlayArchive !== undefined && { overlayArchive }),
      ...(kernelArgs !== undefined && { kernelArgs }),
      ...((template?.imagesDir ?? options.imagesDir) !== undefined && { imagesDir: template?.imagesDir ?? options.imagesDir }),
    };
    const secondary = this.#startNode("secondary", `${this.#name}-secondary`, disks.secondary, {});
    this.#secondary = secondary;
    const url = await secondary.process.listeningUrl(60_000);
    const link = await this.#newProxy(url);
    const snapshotPath = template?.snapshotPath ?? options.snapshotPath;
    const primary = this.#startNode("primary", `${this.#name}-primary`, disks.primary, {
      connect: link.url,
      ...(snapshotPath !== undefined && { snapshotPath }),
    });
    primary.link = link;
    this.#primary = primary;
    await this.#until(
      () => this.isProtected,
      this.#startTimeoutMs,
      "protected guest after start",
      () => this.#deadNode(),
    );
    this.#emit({ type: "protected", primary: primary.name, secondary: secondary.name });
    // A booted guest has just run the overlay's start-up command; a restored one ran it when the template booted.
    if (template === undefined && snapshotPath === undefined && options.overlay?.startup !== undefined) await checkStartupCommand(this);
  }

  #deadNode(): string | undefined {
    const dead = this.#nodes.find((node) => !node.running);
    return dead && `${dead.name} exited`;
  }

  async #newProxy(secondaryUrl: string): Promise<FaultProxy> {
    const proxy = await FaultProxy.start(Number(new URL(secondaryUrl).port), { delayMs: this.#options.linkDelayMs ?? 0 });
    this.#proxies.add(proxy);
    return proxy;
  }

  #startNode(role: NodeRole, name: string, disks: string[], extra: Partial<NodeConfig>): PairNode {
    if (this.#stopping) throw new PairError("the pair is stopping");
    const process = new NodeProcess({ ...this.#nodeConfig!, ...extra, role, disks, name }, { echoStderr: this.#options.echoLogs === true });
    const node = new PairNode(name, role, process, disks);
    this.#nodes.push(node);
    this.#emit({ type: "node-started", node: name, role, pid: node.pid });
    process.onEvent((event) => {
      if (event.type === "state") {
        this.#emit({ type: "state", node: name, engine: event.engine, state: event.state, reason: event.reason });
        if (event.engine === "secondary" && event.state === "active") this.#tookOver(node);
      } else if (event.type === "output") {
        this.#emit({ type: "console", node: name, text: event.text });
      } else if (event.type === "sync") {
        this.#emit({ type: "sync", node: name, report: event.report });
      } else if (event.type === "phase") {
        this.#emit({ type: "phase", node: name, phase: event.phase });
      } else if (event.type === "witness-ask") {
        return this.#answerWitness(node, event);
      }
      this.#changed();
    });
    void process.exited.then((code) => this.#exited(node, code));
    return node;
  }

  /** The witness's answer to a node, and an event saying what it decided. */
  #answerWitness(node: PairNode, question: WitnessQuestion): void {
    const witness = this.#witness;
    if (witness === undefined) return; // not an arbitrated pair: the node times out and says so
    const answer = askWitness(witness, question.node, question);
    if (question.op === "claim" || !answer.granted)
      this.#emit({
        type: "witness",
        node: node.name,
        op: question.op,
        epoch: question.epoch,
        granted: answer.granted,
        ...(!answer.granted && { reason: answer.reason }),
      });
    if (node.process.child.connected) node.process.child.send({ type: "witness-answer", id: question.id, answer } satisfies WitnessReply);
  }

  #tookOver(node: PairNode): void {
    if (node !== this.#secondary) return;
    const from = this.#primary!;
    this.#primary = node;
    this.#secondary = undefined;
    this.#failovers++;
    this.#emit({ type: "takeover", from: from.name, to: node.name, failovers: this.#failovers });
    this.#heal();
  }

  #exited(node: PairNode, code: number | null): void {
    this.#witness?.gone(node.name);
    this.#emit({ type: "node-exited", node: node.name, code });
    if (!this.#stopping && node === this.#secondary) {
      this.#secondary = undefined;
      this.#emit({ type: "secondary-lost", node: node.name });
      this.#heal();
    }
    this.#changed();
  }

  /** Starts re-protection (after the configured delay) unless it is off, running, or not possible. */
  #heal(): void {
    const primary = this.#primary;
    // No primary yet: a secondary that died during start-up fails the start, there is nothing to heal.
    if (primary === undefined || this.#options.reprotect === false || this.#healing !== undefined || this.#stopping) return;
    this.#healing = (async () => {
      const delay = this.#options.reprotectDelayMs ?? 0;
      if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay));
      await this.#reprotect(primary);
    })()
      .catch((error: unknown) => {
        this.#lastHealError = (error as Error).message.split("\n")[0];
        this.#emit({ type: "reprotect-failed", primary: primary.name, error: this.#lastHealError! });
      })
      .finally(() => {
        this.#healing = undefined;
        this.#changed();
      });
  }

  async #reprotect(primary: PairNode): Promise<void> {
    if (this.#stopping || this.#secondary !== undefined || primary !== this.#primary || !primary.runsGuest) return;
    const name = `${this.#name}-secondary-${++this.#generation}`;
    const node = this.#startNode("secondary", name, await freshImages(this.dir, name, this.#diskSizes), {});
    this.#secondary = node;
    this.#emit({ type: "reprotecting", primary: primary.name, secondary: name });
    try {
      const url = await node.process.listeningUrl(60_000);
      if (primary.hasPrimaryEngine) {
        // It keeps dialling its link by itself: point the link at the new secondary.
        const link = primary.link!;
        link.retarget(Number(new URL(url).port));
        link.heal();
      } else {
        // A survivor that has not protected its guest yet: give it a link and tell it to.
        primary.link = await this.#newProxy(url);
        await primary.process.request({ type: "protect", connect: primary.link.url });
      }
      await this.#until(
        () => primary.isProtected && node.secondaryState === "replicating",
        this.#startTimeoutMs,
        `re-protection of ${primary.name} by ${name}`,
        () => (!node.running ? `${name} exited` : !primary.running ? `${primary.name} exited` : undefined),
      );
      this.#lastHealError = undefined;
      this.#emit({ type: "protected", primary: primary.name, secondary: name });
    } catch (error) {
      if (this.#secondary === node) this.#secondary = undefined;
      await node.process.kill("SIGKILL");
      throw error;
    }
  }

  #guestNode(): PairNode {
    const node = this.#primary;
    if (node === undefined || !node.runsGuest) {
      throw new NoGuestError(`no node runs the guest now${node && !node.running ? ` (${node.name} is not running; await waitForTakeover() first)` : ""}`);
    }
    return node;
  }

  #markFault(): void {
    this.#failoversAtFault = this.#failovers;
  }

  #requirePrimary(): PairNode {
    if (this.#primary === undefined) throw new PairError("the pair has not started");
    return this.#primary;
  }

  #requireLink(): FaultProxy {
    const link = this.#requirePrimary().link;
    if (link === undefined) throw new PairError(`${this.#primary!.name} has no replication link (it has not protected its guest yet)`);
    return link;
  }

  #emit(event: PairEvent): void {
    for (const listener of [...this.#listeners]) listener(event);
  }

  #changed(): void {
    for (const waiter of [...this.#waiters]) waiter();
  }

  /** Resolves when `condition` holds (checked at every node event); rejects on timeout, on `abort`'s reason, or when the pair stops. */
  #until(condition: () => boolean, timeoutMs: number, what: string, abort: () => string | undefined = () => undefined): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const finish = (error?: Error) => {
        clearTimeout(timer);
        clearInterval(poll);
        this.#waiters.delete(check);
        if (error) reject(error);
        else resolve();
      };
      const check = () => {
        if (condition()) return finish();
        const why = this.#stopping ? "the pair was stopped" : abort();
        if (why !== undefined) finish(new PairError(`no ${what}: ${why}\n${this.describe()}`));
      };
      const timer = setTimeout(() => finish(new PairTimeoutError(`no ${what} within ${timeoutMs} ms\n${this.describe()}`)), timeoutMs);
      // Conditions also depend on process exits and timers; a slow poll covers what no event announces.
      const poll = setInterval(check, 250);
      this.#waiters.add(check);
      check();
    });
  }

  async #writeArtifacts(): Promise<PairArtifacts> {
    const nodes = await Promise.all(
      this.#nodes.map(async (node) => {
        const log = join(this.dir, `${node.name}.log`);
        const transcript = join(this.dir, `${node.name}.console`);
        // The engine's states with when the parent heard of them (ms since this pair started), to line a failure up with the faults.
        const states = node.process.stateLog.map((s) => `${(s.at - this.#startedAt).toFixed(0).padStart(7)} ms  ${s.engine} ${s.state}: ${s.reason}`);
        await writeFile(log, `${node.log}\n--- engine states (ms since the pair started, as the parent heard them) ---\n${states.join("\n")}\n`);
        await writeFile(transcript, node.transcript);
        return { name: node.name, startedAs: node.startedAs, log, console: transcript, disks: node.disks };
      }),
    );
    return { dir: this.dir, nodes };
  }
}

/** Starts a pair (see Pair.start). */
export function startPair(options: PairOptions = {}, onEvent?: (event: PairEvent, pair: Pair) => void): Promise<Pair> {
  return Pair.start(options, onEvent);
}

/** Starts a pair, runs `body` with it, and stops it whatever happens (keeping its files if `body` threw and `keepFilesOnFailure` is set). */
export async function withPair<T>(options: PairOptions & { keepFilesOnFailure?: boolean }, body: (pair: Pair) => Promise<T>): Promise<T> {
  const pair = await startPair(options);
  let failed = true;
  try {
    const result = await body(pair);
    failed = false;
    return result;
  } finally {
    const kept = await pair.stop({ keepFiles: failed && options.keepFilesOnFailure === true });
    if (kept) process.stderr.write(`twinvm: the failed pair's files are in ${kept.dir}\n`);
  }
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // already gone
  }
}
