// Handing the guest over to the secondary (a failing disk here, a migration), as the steps
// it takes:
//   1. stop the guest at an instruction boundary;
//   2. a last sync: the secondary then holds everything the guest did;
//   3. ask the secondary to take over, and wait until it says its guest runs;
//   4. fence this primary: it never acknowledges another guest write.
// If any step fails (no secondary, a refusal, a timeout), the guest runs on here, unprotected.
import type { PrimaryCore } from "./core.ts";

/** How long a handover waits for the secondary to say it runs the guest. */
export const HANDOVER_TIMEOUT_MS = 30_000;

/** Resolves with when the guest stopped here and resumed there (ms since the Unix epoch). */
export async function handOver(core: PrimaryCore, reason: string): Promise<{ pausedAtMs: number; resumedAtMs: number | undefined }> {
  const session = core.session;
  if (!core.fsm.is("protected") || session === undefined) throw new Error(`handOver: the guest is not protected (${core.fsm.state})`);
  core.fsm.go("handing-over", reason);
  await core.guest.pause();
  const pausedAtMs = core.options.clock.wallMs();
  try {
    await core.syncNow();
    const promoted = session.promotion(HANDOVER_TIMEOUT_MS);
    // Awaited below; a failed send must not leave its rejection unhandled.
    void promoted.catch(() => undefined);
    // Asked before the secondary hears of it: its guest, once running, must not wait out this node's hold.
    core.releaseHold();
    await session.sendControl({ type: "handover", epoch: core.options.epoch, reason: reason.slice(0, 500) });
    const { resumedAtMs } = await promoted;
    core.fence(`handed over to the secondary (${reason})`);
    return { pausedAtMs, resumedAtMs };
  } catch (error) {
    if (core.fsm.is("handing-over")) core.lose(session, `handover failed: ${(error as Error).message}`);
    if (core.fsm.is("unprotected")) core.guest.resume();
    throw error;
  }
}
