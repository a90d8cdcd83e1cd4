// A bounded failover campaign for CI: one boot, then two rounds of primary SIGKILL per
// disk mode, a secondary SIGKILL under each loss policy (then re-protection by a fresh
// secondary), and one link cut through the fault proxy (then fencing of the old primary
// once the link heals). Each round must take over (or keep running), lose no write the
// guest saw as durable, and leave an image that e2fsck finds clean. The kill delays come
// from a fixed seed.
import { expect } from "chai";
import { CampaignFixture } from "../campaign/pair-fixture.ts";
import { failureDetail, roundLine, summarize } from "../campaign/report.ts";
import { planRounds } from "../campaign/run-campaign.ts";
import { ALL_FEATURES, type RoundPlan, type RoundResult } from "../campaign/round-result.ts";
import { runRound } from "../campaign/rounds.ts";

const SEED = 20261125;

function plans(): RoundPlan[] {
  const base = { seed: SEED, policy: "continue" as const, features: ALL_FEATURES };
  const kills = planRounds({ ...base, rounds: 2, faults: ["primary-kill"], modes: ["logging-replay", "dirty-block-copy"] });
  const [secondaryKill] = planRounds({ ...base, seed: SEED + 1, rounds: 1, faults: ["secondary-kill"], modes: ["logging-replay"] });
  const [stalled] = planRounds({ ...base, seed: SEED + 3, policy: "stall", rounds: 1, faults: ["secondary-kill"], modes: ["dirty-block-copy"] });
  const [linkCut] = planRounds({ ...base, seed: SEED + 2, rounds: 1, faults: ["link-cut"], modes: ["dirty-block-copy"] });
  return [...kills, secondaryKill!, stalled!, linkCut!].map((plan, i) => ({ ...plan, index: i + 1 }));
}

describe("failover campaign (bounded)", function () {
  this.timeout(8 * 60_000);
  let fixture: CampaignFixture;
  const results: RoundResult[] = [];

  before(async function () {
    fixture = await CampaignFixture.create();
  });

  after(async () => {
    await fixture?.dispose();
  });

  for (const plan of plans()) {
    it(`round ${plan.index}: ${plan.fault}, ${plan.mode}, fault after ${plan.delayMs} ms`, async function () {
      const result = await runRound(plan, { fixture, features: ALL_FEATURES, echoStderr: false });
      results.push(result);
      const context = [roundLine(result), ...failureDetail(result)].join("\n");
      expect(result.error, context).to.equal(null);
      expect(result.survived, context).to.equal(true);
      expect(result.answered, context).to.equal(true);
      for (const verdict of result.verdicts) {
        expect(verdict.lostWrites, context).to.equal(0);
        expect(verdict.fsckClean, context).to.equal(true);
      }
      if (plan.fault === "secondary-kill" && plan.policy === "continue") expect(result.writesContinued, context).to.equal(true);
      if (plan.fault === "link-cut") expect(result.splitBrain, "both guests run after a cut (documented limitation)").to.equal(true);
      for (const check of result.optionalChecks) expect(check.outcome, `${check.name}: ${check.detail}\n${context}`).to.equal("passed");
      const expected = plan.fault === "secondary-kill" ? (plan.policy === "stall" ? 2 : 1) : plan.fault === "link-cut" ? 1 : 0;
      expect(result.optionalChecks.filter((c) => c.outcome === "passed").length, context).to.equal(expected);
      expect(result.passed, context).to.equal(true);
    });
  }

  it("summarizes: every round passed, no lost writes, every takeover timed", function () {
    const summary = summarize(results);
    expect(summary.rounds).to.equal(plans().length);
    expect(summary.lostWrites).to.equal(0);
    expect(summary.passed).to.equal(summary.rounds);
    expect(summary.failoverMs?.count).to.equal(summary.failovers);
  });
});
