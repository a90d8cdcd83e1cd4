// What the guest prints is never lost across a takeover (real guest, two node processes, an
// arbiter, a replication link with 15 ms each way): a loop in the guest numbers console lines
// as fast as it can while the primary is frozen (SIGSTOP), then, on the healed pair, killed;
// the lines the old primary let out followed by those the survivor prints hold every number.
// The link's length keeps acknowledged syncs on their way back when the fault strikes.
// Lines covered by a sync the secondary acknowledged but the dead primary never let out
// travel with that sync and the survivor prints them at the takeover; before, they were
// lost (the survivor's guest, resumed after printing them, goes on from the next number).
// Some may come twice: a number may repeat, none may be missing.
import { expect } from "chai";
import { startPair, type Pair } from "../testing/index.ts";

/** A loop printing `tick<round>-1`, `tick<round>-2`, ... as fast as it can (syncs back to back) until /tmp/stop-ticks exists. */
const tickLoop = (round: number) => `(i=0; while [ ! -e /tmp/stop-ticks ]; do i=$((i+1)); echo tick${round}-$i; done) &`;

/** The numbers of round `round`'s complete tick lines in `text`, in order. */
function ticksOf(round: number, text: string): number[] {
  return [...text.matchAll(new RegExp(`tick${round}-(\\d+)\\r?\\n`, "g"))].map((match) => Number(match[1]));
}

async function until(condition: () => boolean, what: string, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe("console output across a takeover (real guest, SIGSTOP and SIGKILL)", function () {
  this.timeout(5 * 60_000);
  let pair: Pair;

  before(async function () {
    pair = await startPair({ arbiter: true, linkDelayMs: 15 });
  });

  after(async () => {
    await pair?.stop();
  });

  for (const [round, fault] of [
    [1, "freeze"],
    [2, "kill"],
  ] as const) {
    it(`round ${round}, primary ${fault === "freeze" ? "frozen" : "killed"}: every numbered line the guest printed before and after is seen, once or more`, async function () {
      await pair.waitForProtected({ timeoutMs: 180_000 });
      const ticks = (text: string) => ticksOf(round, text);
      await pair.exec("rm -f /tmp/stop-ticks");
      await pair.exec(tickLoop(round));
      const primary = pair.primary;
      // Stop it while it prints: a sync covering ticks is nearly always in flight then.
      await until(() => ticks(primary.transcript).length >= 30, "ticks released by the primary", 30_000);
      const killed = fault === "freeze" ? pair.freezePrimary() : await pair.killPrimary();
      const survivor = await pair.waitForTakeover({ timeoutMs: 30_000 });
      const lastSeen = Math.max(...ticks(killed.transcript));
      await until(() => Math.max(0, ...ticks(survivor.transcript)) >= lastSeen + 20, "ticks printed on the survivor", 60_000);
      await pair.exec("touch /tmp/stop-ticks");
      // A thawed old primary finds it lost the guest (fenced): it lets out nothing more.
      if (fault === "freeze") pair.thaw(killed);
      const seen = ticks(killed.transcript + survivor.transcript);
      const numbers = new Set(seen);
      const missing: number[] = [];
      for (let n = 1; n <= Math.max(...seen); n++) if (!numbers.has(n)) missing.push(n);
      expect(missing, `printed by the old primary up to ${lastSeen}; the survivor's first lines: ${survivor.transcript.slice(0, 300)}`).to.deep.equal([]);
    });
  }
});
