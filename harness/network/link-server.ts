// The gateway's end of the network link: a WebSocket listener (loopback unless allowed
// otherwise) where nodes prove the secret, attach with their epoch, and then exchange
// frames with the gateway core. Every connection is bounded before it authenticates (the
// ws transport's limits), every record after (MAX_LINK_MESSAGE_BYTES, the codec's checks);
// a node that breaks the protocol loses its link, never the gateway.
import type { GatewayCore, NodeSink } from "../../replication/network/gateway-core.ts";
import { NetworkLinkError } from "../../replication/network/link-errors.ts";
import { linkHandshake } from "../../replication/network/link-handshake.ts";
import { BATCH_RECORD_BYTES, MAX_LINK_MESSAGE_BYTES } from "../../replication/network/link-limits.ts";
import type { IngressFrame, LinkControl } from "../../replication/network/link-messages.ts";
import { askWitness, type WitnessCore } from "../../replication/arbiter/witness.ts";
import { LinkSession, type LinkInbound } from "../../replication/network/link-session.ts";
import { listenReplication } from "../../replication/node/ws-transport.ts";
import type { Transport } from "../../replication/transport/transport.ts";

/** An authenticated node that does not say which epoch it runs within this is let go. */
const ATTACH_TIMEOUT_MS = 5000;

export interface LinkServerOptions {
  secret: Uint8Array;
  /** An arbiter's witness served on this link too (nodes ask it without attaching). */
  witness?: WitnessCore;
  /** Default 127.0.0.1 and a free port; a non-loopback host needs allowNonLoopback. */
  listen?: { host?: string; port?: number; allowNonLoopback?: boolean };
  /** attachTimeoutMs: how long an authenticated node may wait to attach, ask the witness or stand by (default 5 s). */
  link?: { heartbeatMs?: number; silenceTimeoutMs?: number; handshakeTimeoutMs?: number; attachTimeoutMs?: number };
}

export type LinkServerEvent =
  /** A connection that did not become a node's link (wrong secret, wrong protocol, timeout). */
  | { type: "link-refused"; peer: string; reason: string }
  /** A node's link ended over a protocol error. */
  | { type: "link-error"; peer: string; reason: string }
  /** The witness answered a node. */
  | { type: "witness"; node: string; op: "claim" | "renew" | "hold"; epoch: number; granted: boolean };

export interface LinkServerCounters {
  open: number;
  handshakesFailed: number;
  protocolErrors: number;
}

export interface LinkServer {
  readonly url: string;
  readonly port: number;
  counters(): LinkServerCounters;
  /** The attached node's id, as it named itself in the handshake. */
  currentNodeId(): string | undefined;
  /** Says goodbye to every node and stops listening. */
  close(): Promise<void>;
}

/** `core` undefined: a witness only (`twinvm witness`): nodes ask, nothing attaches. */
export async function startLinkServer(core: GatewayCore | undefined, options: LinkServerOptions, emit: (event: LinkServerEvent) => void): Promise<LinkServer> {
  const sessions = new Map<LinkSession, NodeSink>();
  const nodeIds = new Map<NodeSink, string>();
  const counts = { handshakesFailed: 0, protocolErrors: 0 };
  const link = options.link ?? {};

  const server = await listenReplication({ ...options.listen, maxMessageBytes: MAX_LINK_MESSAGE_BYTES }, (transport) => accept(transport));

  async function accept(transport: Transport): Promise<void> {
    const peer = transport.label;
    let session: LinkSession;
    try {
      const authenticated = await linkHandshake(transport, "gateway", options.secret, {
        nodeId: "gateway",
        ...(link.handshakeTimeoutMs !== undefined ? { timeoutMs: link.handshakeTimeoutMs } : {}),
      });
      session = new LinkSession(authenticated, {
        ...(link.heartbeatMs !== undefined ? { heartbeatMs: link.heartbeatMs } : {}),
        ...(link.silenceTimeoutMs !== undefined ? { silenceTimeoutMs: link.silenceTimeoutMs } : {}),
      });
    } catch (error) {
      counts.handshakesFailed++;
      emit({ type: "link-refused", peer, reason: (error as Error).message });
      return;
    }
    const sink = new SessionSink(session);
    sessions.set(session, sink);
    nodeIds.set(sink, session.peerNodeId);
    session.onWritable(() => core?.resume(sink));
    let attached = false;
    let askedWitness = false;
    let standingBy = false;
    const attachTimeoutMs = link.attachTimeoutMs ?? ATTACH_TIMEOUT_MS;
    const attachTimer = setTimeout(() => {
      if (!attached && !askedWitness && !standingBy) session.fail(new NetworkLinkError("timeout", `no attach within ${attachTimeoutMs} ms`));
    }, attachTimeoutMs);
    attachTimer.unref();

    session.onMessage((inbound: LinkInbound) => {
      if (inbound.kind === "control" && inbound.message.type === "witness-ask") {
        askedWitness = true;
        return answerWitness(session, inbound.message);
      }
      if (core === undefined) throw new NetworkLinkError("order", "this is an arbiter's witness, not a network gateway: nothing attaches here");
      if (!attached) {
        // A secondary's link waits here, authenticated, for the takeover that attaches it (its heartbeats keep it open).
        if (inbound.kind === "control" && inbound.message.type === "standby" && !standingBy) {
          standingBy = true;
          return;
        }
        if (inbound.kind !== "control" || inbound.message.type !== "attach")
          throw new NetworkLinkError("order", "the first message must be attach (or standby, then attach)");
        const { epoch, lastIngressId } = inbound.message;
        const result = core.attach(sink, epoch, lastIngressId);
        clearTimeout(attachTimer);
        if (!result.accepted) {
          session.sendControl({ type: "stale-epoch", epoch: result.currentEpoch, message: result.message });
          session.close(`epoch ${epoch} is stale`);
          return;
        }
        attached = true;
        session.sendControl({ type: "attached", epoch, resumeFrom: result.resumeFrom, replay: result.replay, missing: result.missing });
        core.resume(sink);
        return;
      }
      if (inbound.kind === "egress") {
        for (const frame of inbound.frames) core.egress(sink, frame);
        return;
      }
      if (inbound.kind === "ingress") throw new NetworkLinkError("order", "a node sent ingress frames");
      const message = inbound.message;
      if (message.type !== "committed") throw new NetworkLinkError("order", `${message.type} from an attached node`);
      const result = core.committed(sink, message.lastIngressId);
      if (!result.ok) throw new NetworkLinkError("order", result.message);
    });

    session.onClose((info) => {
      clearTimeout(attachTimer);
      sessions.delete(session);
      nodeIds.delete(sink);
      // The node's connection to the witness is gone (a crashed node's closes at once): so is its hold.
      if (askedWitness) options.witness?.gone(session.peerNodeId);
      if (info.error !== undefined) {
        counts.protocolErrors++;
        emit({ type: "link-error", peer, reason: info.error.message });
      }
      core?.detach(sink, info.reason);
    });
  }

  function answerWitness(session: LinkSession, ask: Extract<LinkControl, { type: "witness-ask" }>): void {
    const witness = options.witness;
    if (witness === undefined) throw new NetworkLinkError("order", "no arbiter's witness is served here");
    // The node's name is the one it proved the secret under in the handshake.
    const answer = askWitness(witness, session.peerNodeId, ask);
    session.sendControl({
      type: "witness-answer",
      id: ask.id,
      granted: answer.granted,
      epoch: answer.epoch,
      leaseMs: answer.granted ? answer.leaseMs : 0,
      holder: answer.granted ? session.peerNodeId : (answer.holder ?? ""),
      reason: answer.granted ? "" : answer.reason.slice(0, 200),
      retryInMs: answer.granted ? 0 : (answer.retryInMs ?? 0),
    });
    // Leases and holds are renewed a few times a second: only a claim, or a refusal, is news.
    if (ask.op === "claim" || !answer.granted) emit({ type: "witness", node: session.peerNodeId, op: ask.op, epoch: ask.epoch, granted: answer.granted });
  }

  let closing: Promise<void> | undefined;
  return {
    url: server.url,
    port: server.port,
    counters: () => ({ open: sessions.size, ...counts }),
    currentNodeId: () => [...nodeIds.entries()].find(([sink]) => core?.isCurrent(sink) === true)?.[1],
    close() {
      closing ??= (async () => {
        for (const session of sessions.keys()) session.close("the gateway is shutting down");
        // Let the goodbyes go out before the listener cuts what is left.
        await new Promise((resolve) => setTimeout(resolve, 20));
        await server.close();
      })();
      return closing;
    },
  };
}

/** A node's link as the core sees it: ingress frames batched per turn into few records. */
class SessionSink implements NodeSink {
  #pending: IngressFrame[] = [];
  #pendingBytes = 0;
  #flushQueued = false;

  constructor(private readonly session: LinkSession) {}

  get writable(): boolean {
    return this.session.writable;
  }

  deliver(frame: Uint8Array, id: number): void {
    this.#pending.push({ id, frame });
    this.#pendingBytes += frame.length + 10;
    // A full batch goes now, so that `writable` sees it; the rest at the end of this turn.
    if (this.#pendingBytes >= BATCH_RECORD_BYTES) this.#flush();
    else if (!this.#flushQueued) {
      this.#flushQueued = true;
      queueMicrotask(() => this.#flush());
    }
  }

  superseded(epoch: number): void {
    this.#flush();
    this.session.sendControl({ type: "superseded", epoch });
    this.session.close(`a node at epoch ${epoch} took this link's place`);
  }

  #flush(): void {
    this.#flushQueued = false;
    if (this.#pending.length === 0) return;
    const frames = this.#pending;
    this.#pending = [];
    this.#pendingBytes = 0;
    this.session.sendIngress(frames);
  }
}
