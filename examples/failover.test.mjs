// A failover test written against twinvm's test API, as a user would write it in
// their own project (`npm install twinvm`, then `node --test failover.test.mjs`).
// It starts a replicated pair, writes a file in the guest and syncs it, SIGKILLs the
// primary, and checks that the secondary took over with the file intact. Each step's
// time is printed as a test diagnostic.
import assert from "node:assert/strict";
import { test } from "node:test";
import { startPair } from "twinvm/testing";

test("a synced file survives the primary's death", { timeout: 600_000 }, async (t) => {
  const timed = async (step, run) => {
    const started = performance.now();
    const result = await run();
    t.diagnostic(`${step}: ${((performance.now() - started) / 1000).toFixed(2)} s`);
    return result;
  };

  // Boots the guest on the primary and waits until the secondary protects it.
  const pair = await timed("startPair (boot + initial sync)", () => startPair({ disks: [{ sizeBytes: 32 << 20 }] }));
  // Whatever happens below, no process or temporary file outlives the test.
  t.after(() => pair.stop());

  await timed("make and mount a file system", async () => {
    const { exitCode, output } = await pair.exec("mkfs.ext4 -q /dev/vda && mount /dev/vda /mnt");
    assert.equal(exitCode, 0, output);
  });
  await timed("write and sync a file", async () => {
    await pair.writeFile("/mnt/greeting.txt", "written on the primary\n");
    assert.equal((await pair.exec("sync /mnt/greeting.txt")).exitCode, 0);
  });

  const killed = await timed("SIGKILL the primary", () => pair.killPrimary());
  const survivor = await timed("wait for the takeover", () => pair.waitForTakeover({ timeoutMs: 30_000 }));
  assert.notEqual(survivor.name, killed.name);

  await timed("read the file on the survivor", async () => {
    assert.equal(await pair.readTextFile("/mnt/greeting.txt"), "written on the primary\n");
  });
  await timed("stop", () => pair.stop());
});
