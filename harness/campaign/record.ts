// A campaign's record: one JSON line naming the campaign (its seed and dimensions, which
// fix its plan), then one line per finished round. Written as rounds finish, so a run
// stopped by a time budget, a signal or a crash keeps what it did; a later run of the same
// campaign with the same record skips the rounds already there. A long campaign (1,000
// rounds is 7-12 hours here) can so be run in parts and summarised as one.
import { appendFile, readFile } from "node:fs/promises";
import type { CampaignOptions } from "./run-campaign.ts";
import type { RoundResult } from "./round-result.ts";

/** What fixes a campaign's plan and its checks: two runs agreeing on these run the same rounds. */
export interface CampaignIdentity {
  seed: number;
  rounds: number;
  modes: CampaignOptions["modes"];
  faults: CampaignOptions["faults"];
  policies: CampaignOptions["policies"];
  syncModes: CampaignOptions["syncModes"];
  arbiters: CampaignOptions["arbiters"];
  features: CampaignOptions["features"];
}

export function campaignIdentity(options: CampaignOptions): CampaignIdentity {
  const { seed, rounds, modes, faults, policies, syncModes, arbiters, features } = options;
  return { seed, rounds, modes, faults, policies, syncModes, arbiters, features };
}

export class RecordError extends Error {}

export interface CampaignRecord {
  identity: CampaignIdentity;
  /** Recorded rounds by plan index (a round recorded twice keeps its last result). */
  results: Map<number, RoundResult>;
  /** Lines that could not be read (a line cut short by a crash mid-write): ignored, counted. */
  unreadableLines: number;
  /** The file ends in the middle of a line (a crash mid-write): the next line must start on a new one. */
  endsMidLine: boolean;
}

function isRoundResult(value: unknown): value is RoundResult {
  if (typeof value !== "object" || value === null) return false;
  const round = value as Partial<RoundResult>;
  return typeof round.plan?.index === "number" && typeof round.passed === "boolean" && Array.isArray(round.verdicts) && Array.isArray(round.optionalChecks);
}

/** The campaign in words: its seed and dimensions. */
export function describeIdentity(identity: CampaignIdentity): string {
  return `seed ${identity.seed}, ${identity.rounds} round(s) x ${identity.faults.join("+")} x ${identity.modes.join("+")}, policy ${identity.policies.join("+")}, sync ${identity.syncModes.join("+")}, arbiter ${identity.arbiters.map((on) => (on ? "on" : "off")).join("+")}`;
}

/** Reads a record; undefined if the file does not exist. Throws RecordError if it is not a campaign record. */
export async function readRecord(path: string): Promise<CampaignRecord | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new RecordError(`cannot read the campaign record ${path}: ${(error as Error).message}`);
  }
  const lines = text.split("\n").filter((line) => line.trim() !== "");
  if (lines.length === 0) return undefined;
  let header: unknown;
  try {
    header = JSON.parse(lines[0]!);
  } catch {
    throw new RecordError(`${path} is not a campaign record: its first line is not JSON`);
  }
  const identity = (header as { campaign?: CampaignIdentity } | null)?.campaign;
  if (typeof identity !== "object" || identity === null || typeof identity.seed !== "number")
    throw new RecordError(`${path} is not a campaign record: its first line names no campaign`);
  const results = new Map<number, RoundResult>();
  let unreadableLines = 0;
  for (const line of lines.slice(1)) {
    let round: unknown;
    try {
      round = (JSON.parse(line) as { round?: unknown } | null)?.round;
    } catch {
      round = undefined;
    }
    if (isRoundResult(round)) results.set(round.plan.index, round);
    else unreadableLines++;
  }
  return { identity, results, unreadableLines, endsMidLine: !text.endsWith("\n") };
}

/**
 * Opens the record for a run: checks that an existing one is of the same campaign, or
 * starts one. Returns the rounds already recorded (to skip), and an append for each new one.
 */
export async function openRecord(
  path: string,
  identity: CampaignIdentity,
): Promise<{ recorded: Map<number, RoundResult>; unreadableLines: number; append(result: RoundResult): Promise<void> }> {
  const existing = await readRecord(path);
  if (existing === undefined) {
    await appendFile(path, `${JSON.stringify({ campaign: identity })}\n`);
  } else if (JSON.stringify(existing.identity) !== JSON.stringify(identity)) {
    throw new RecordError(
      `${path} records another campaign (${describeIdentity(existing.identity)}); this one is ${describeIdentity(identity)}: use another file, or the same options`,
    );
  } else if (existing.endsMidLine) {
    await appendFile(path, "\n");
  }
  return {
    recorded: existing?.results ?? new Map<number, RoundResult>(),
    unreadableLines: existing?.unreadableLines ?? 0,
    append: (result) => appendFile(path, `${JSON.stringify({ round: result })}\n`),
  };
}
