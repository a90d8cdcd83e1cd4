// Everything a campaign round needs around the pair: a guest booted ONCE (ext2 made on
// /dev/vda and mounted, the workload script in /tmp) and snapshotted, fresh disk images
// per round (the primary's a copy of the formatted template, the secondary's an empty
// sparse file the initial sync fills), and the two node processes, optionally with the
// fault proxy on the link. Every wait is bounded and `Pair.close()` kills what it started.
import { copyFile, mkdtemp, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Machine } from "../../emulator/machine.ts";
import { FileBackend } from "../../emulator/node/file-backend.ts";
import { defaultGuest } from "../../emulator/node/images.ts";
import { virtioBlkDisk } from "../../emulator/virtio-blk/disk.ts";
import type { DiskMode, SecondaryLossPolicy } from "../../replication/engine/primary.ts";
import { FaultProxy } from "../fault-proxy.ts";
import { NodeProcess } from "../node-process.ts";
import type { NodeConfig } from "../replica-node.ts";
import { installWorkload, MOUNT_POINT } from "./guest-workload.ts";

const DISK_BYTES = 64 << 20;
const SECRET = "twinvm-failover-campaign-secret-0123456789";
/** A takeover after SIGKILL is driven by the closed socket; this only bounds silent faults. */
const PEER_TIMEOUT_MS = 3000;
const STARTUP_TIMEOUT_MS = 120_000;

/**
 * NodeConfig plus the engine's `onSecondaryLoss`, which replica-node does not pass on
 * yet (it ignores unknown fields); equal to NodeConfig once it does.
 */
type CampaignNodeConfig = NodeConfig & { onSecondaryLoss?: SecondaryLossPolicy };

export interface PairOptions {
  mode: DiskMode;
  label: string;
  /** Route the replication link through a FaultProxy (needed to cut it or to swap the secondary). */
  viaProxy: boolean;
  policy?: SecondaryLossPolicy;
  echoStderr?: boolean;
}

export class Pair {
  readonly #fixture: CampaignFixture;
  readonly #options: PairOptions;
  readonly #started: NodeProcess[] = [];
  readonly #images: string[] = [];
  #generation = 0;

  constructor(
    fixture: CampaignFixture,
    options: PairOptions,
    readonly primary: NodeProcess,
    public secondary: NodeProcess,
    readonly primaryImage: string,
    public secondaryImage: string,
    readonly proxy: FaultProxy | undefined,
  ) {
    this.#fixture = fixture;
    this.#options = options;
    this.#started.push(primary, secondary);
    this.#images.push(primaryImage, secondaryImage);
  }

  static async start(fixture: CampaignFixture, options: PairOptions): Promise<Pair> {
    const primaryImage = join(fixture.dir, `${options.label}-primary.img`);
    await copyFile(fixture.templateImage, primaryImage);
    const started: { secondary?: NodeProcess; primary?: NodeProcess; proxy?: FaultProxy; secondaryImage?: string } = {};
    try {
      const secondary = await fixture.startSecondary(options, `${options.label}-secondary-0`);
      Object.assign(started, secondary);
      const url = await secondary.secondary.listeningUrl(STARTUP_TIMEOUT_MS);
      const proxy = options.viaProxy ? await FaultProxy.start(Number(new URL(url).port)) : undefined;
      started.proxy = proxy;
      const primary = fixture.node(
        { role: "primary", disks: [primaryImage], mode: options.mode, snapshotPath: fixture.snapshotPath, connect: proxy?.urlFor(url) ?? url, ...(options.policy && { onSecondaryLoss: options.policy }) },
        options,
      );
      started.primary = primary;
      await primary.waitForState("protected", STARTUP_TIMEOUT_MS);
      await secondary.secondary.waitForState("replicating", 30_000);
      return new Pair(fixture, options, primary, secondary.secondary, primaryImage, secondary.secondaryImage, proxy);
    } catch (error) {
      await Promise.all([started.primary?.kill(), started.secondary?.kill(), started.proxy?.close()]);
      await rm(primaryImage, { force: true });
      if (started.secondaryImage) await rm(started.secondaryImage, { force: true });
      throw error;
    }
  }

  /** Where a round may put temporary files (removed with the fixture). */
  get scratchDir(): string {
    return this.#fixture.dir;
  }

  /** A fresh secondary (empty image) behind the proxy, for re-protection after a loss. */
  async replaceSecondary(): Promise<NodeProcess> {
    if (!this.proxy) throw new Error("replacing the secondary needs the fault proxy");
    const { secondary, secondaryImage } = await this.#fixture.startSecondary(this.#options, `${this.#options.label}-secondary-${++this.#generation}`);
    this.#started.push(secondary);
    this.#images.push(secondaryImage);
    const url = await secondary.listeningUrl(STARTUP_TIMEOUT_MS);
    this.proxy.retarget(Number(new URL(url).port));
    this.proxy.heal();
    this.secondary = secondary;
    this.secondaryImage = secondaryImage;
    return secondary;
  }

  async close(): Promise<void> {
    await Promise.all(this.#started.map((node) => node.kill()));
    await this.proxy?.close();
    await Promise.all(this.#images.map((image) => rm(image, { force: true })));
  }
}

export class CampaignFixture {
  /** Every node process started from this fixture, so that dispose() can kill stragglers. */
  readonly #nodes = new Set<NodeProcess>();

  private constructor(
    readonly dir: string,
    readonly templateImage: string,
    readonly snapshotPath: string,
    readonly secretFile: string,
    readonly bootMs: number,
  ) {}

  /** Boots the guest once, formats and mounts the disk, installs the workload, and snapshots it. */
  static async create(parentDir = tmpdir()): Promise<CampaignFixture> {
    const dir = await mkdtemp(join(parentDir, "twinvm-campaign-"));
    try {
      const secretFile = join(dir, "secret");
      await writeFile(secretFile, SECRET, { mode: 0o600 });
      const templateImage = join(dir, "template-vda.img");
      const disk = await FileBackend.open(templateImage, { createSizeBytes: DISK_BYTES });
      const machine = new Machine({ ...defaultGuest(), devices: [virtioBlkDisk({ backend: disk, id: "vda" })] });
      try {
        const { bootMs } = await machine.boot();
        const format = await machine.exec(`mke2fs -q -F /dev/vda && mkdir -p ${MOUNT_POINT} && mount /dev/vda ${MOUNT_POINT} && sync`, { timeoutMs: 60_000 });
        if (format.exitCode !== 0) throw new Error(`formatting /dev/vda failed: ${format.output}`);
        await installWorkload(machine);
        const snapshotPath = join(dir, "booted.snap");
        await writeFile(snapshotPath, await machine.snapshot());
        return new CampaignFixture(dir, templateImage, snapshotPath, secretFile, bootMs);
      } finally {
        await machine.destroy(); // closes (and so flushes) the template image
      }
    } catch (error) {
      await rm(dir, { recursive: true, force: true });
      throw error;
    }
  }

  node(config: Omit<CampaignNodeConfig, "secretFile" | "peerTimeoutMs" | "metricsIntervalMs">, options: Pick<PairOptions, "echoStderr">): NodeProcess {
    const full: CampaignNodeConfig = { ...config, secretFile: this.secretFile, peerTimeoutMs: PEER_TIMEOUT_MS, metricsIntervalMs: 0 };
    const node = new NodeProcess(full, { echoStderr: options.echoStderr ?? false });
    this.#nodes.add(node);
    void node.exited.then(() => this.#nodes.delete(node));
    return node;
  }

  async startSecondary(options: PairOptions, name: string): Promise<{ secondary: NodeProcess; secondaryImage: string }> {
    const secondaryImage = join(this.dir, `${name}.img`);
    await writeFile(secondaryImage, "");
    await truncate(secondaryImage, DISK_BYTES);
    return { secondary: this.node({ role: "secondary", disks: [secondaryImage], mode: options.mode }, options), secondaryImage };
  }

  /** Kills any node still running, then removes every image and the snapshot. */
  async dispose(): Promise<void> {
    await Promise.all([...this.#nodes].map((node) => node.kill()));
    await rm(this.dir, { recursive: true, force: true });
  }
}
