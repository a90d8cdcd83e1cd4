// The campaign's record: a run in parts must skip exactly what an earlier part finished,
// refuse a record of another campaign, and survive a line cut short by a crash.
import { appendFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { campaignIdentity, openRecord, readRecord, RecordError } from "../campaign/record.ts";
import { planRounds, type CampaignOptions } from "../campaign/run-campaign.ts";
import { ALL_FEATURES, emptyResult, type RoundResult } from "../campaign/round-result.ts";

const OPTIONS: CampaignOptions = {
  rounds: 2,
  modes: ["logging-replay", "dirty-block-copy"],
  faults: ["primary-kill", "link-cut"],
  seed: 7,
  policies: ["continue", "stall"],
  syncModes: ["synchronous", "speculative"],
  arbiters: [false, true],
  features: ALL_FEATURES,
};

function passedRound(index: number): RoundResult {
  const plan = planRounds(OPTIONS)[index - 1]!;
  return { ...emptyResult(plan), survived: true, answered: true, passed: true, wallMs: 1000 + index };
}

describe("campaign record", () => {
  let dir: string;
  let path: string;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "twinvm-campaign-record-"));
    path = join(dir, "campaign.jsonl");
  });

  afterEach(() => rm(dir, { recursive: true, force: true }));

  it("starts a record with the campaign's identity, and a second run finds the rounds the first finished", async () => {
    const first = await openRecord(path, campaignIdentity(OPTIONS));
    expect(first.recorded.size).to.equal(0);
    await first.append(passedRound(1));
    await first.append(passedRound(3));

    const second = await openRecord(path, campaignIdentity(OPTIONS));
    expect([...second.recorded.keys()]).to.deep.equal([1, 3]);
    expect(second.recorded.get(3)!.plan).to.deep.equal(planRounds(OPTIONS)[2]);
    expect(second.recorded.get(3)!.wallMs).to.equal(1003);
    expect(second.unreadableLines).to.equal(0);
  });

  it("refuses a record of another campaign, naming both", async () => {
    await openRecord(path, campaignIdentity(OPTIONS));
    const other = campaignIdentity({ ...OPTIONS, seed: 8 });
    let error: unknown;
    await openRecord(path, other).catch((caught: unknown) => (error = caught));
    expect(error).to.be.instanceOf(RecordError);
    expect((error as Error).message)
      .to.contain("seed 7")
      .and.to.contain("seed 8");
    // A different set of checks is a different campaign too, even with the same seed.
    error = undefined;
    await openRecord(path, campaignIdentity({ ...OPTIONS, features: { ...ALL_FEATURES, fencing: false } })).catch((caught: unknown) => (error = caught));
    expect(error).to.be.instanceOf(RecordError);
  });

  it("ignores a round line cut short by a crash, and starts the next on a line of its own", async () => {
    const first = await openRecord(path, campaignIdentity(OPTIONS));
    await first.append(passedRound(1));
    const whole = JSON.stringify({ round: passedRound(2) });
    await appendFile(path, whole.slice(0, whole.length / 2));

    const second = await openRecord(path, campaignIdentity(OPTIONS));
    expect([...second.recorded.keys()]).to.deep.equal([1]);
    expect(second.unreadableLines).to.equal(1);
    await second.append(passedRound(2));
    const third = await readRecord(path);
    expect([...third!.results.keys()]).to.deep.equal([1, 2]);
    expect(third!.unreadableLines).to.equal(1);
  });

  it("says plainly when a file is not a record, and treats a missing one as a new campaign", async () => {
    expect(await readRecord(join(dir, "absent.jsonl"))).to.equal(undefined);
    await writeFile(path, "round,result\n1,pass\n");
    let error: unknown;
    await readRecord(path).catch((caught: unknown) => (error = caught));
    expect(error).to.be.instanceOf(RecordError);
    expect((error as Error).message).to.contain("not a campaign record");
    // Nothing was written to a file that is not a record.
    expect(await readFile(path, "utf8")).to.equal("round,result\n1,pass\n");
  });
});
