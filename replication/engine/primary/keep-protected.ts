// Keeps a primary protected: whenever it has no secondary, it dials the secondary's address
// again and runs a full resync with whoever answers there. A peer that proves the secret and
// has seen a higher epoch (it took over) fences this primary; anything a peer merely claims
// before proving the secret (an impostor on the port, a refusal) is only a failed attempt.
import { StaleEpochError, handshake } from "../../channel/handshake.ts";
import type { Transport } from "../../transport/transport.ts";
import { systemClock, type Clock, type Timer } from "../../clock.ts";
import type { PrimaryEngine } from "./engine.ts";

export interface KeepProtectedOptions {
  /** Opens a transport to the secondary (e.g. a WebSocket to its URL). */
  connect: () => Promise<Transport>;
  secret: Uint8Array;
  /** Wait between attempts while unprotected. */
  retryMs?: number;
  /** The clock of the retries (tests pass a manual one). */
  clock?: Clock;
  log?: (line: string) => void;
}

export interface Protector {
  /** Resolves after the first attempt (protected or not). */
  readonly firstAttempt: Promise<void>;
  stop(): void;
}

export function keepProtected(engine: PrimaryEngine, options: KeepProtectedOptions): Protector {
  const retryMs = options.retryMs ?? 1000;
  let stopped = false;
  let timer: Timer | undefined;
  const clock = options.clock ?? systemClock;
  let attempting = false;

  const attempt = async (): Promise<void> => {
    if (stopped || attempting || (engine.state !== "idle" && engine.state !== "unprotected")) return;
    attempting = true;
    try {
      const transport = await options.connect();
      const channel = await handshake(transport, "primary", options.secret, { epoch: engine.epoch });
      await engine.protect(channel);
    } catch (error) {
      if (error instanceof StaleEpochError) {
        engine.fence(`the secondary proved the secret and has taken over (${error.message})`);
        stopped = true;
      } else {
        options.log?.(`primary: cannot reach a secondary: ${(error as Error).message}; retrying in ${retryMs} ms`);
      }
    } finally {
      attempting = false;
    }
  };

  const schedule = () => {
    if (stopped || engine.state === "fenced" || engine.state === "closed") return;
    timer = clock.setTimeout(() => void attempt().finally(schedule), retryMs);
  };
  const firstAttempt = attempt();
  void firstAttempt.finally(schedule);
  return {
    firstAttempt,
    stop() {
      stopped = true;
      timer?.cancel();
    },
  };
}
