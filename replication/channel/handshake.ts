// The versioned, mutual handshake. Both sides at once: send `challenge`; on the
// peer's challenge, check roles/epochs/versions and send `auth` (our proof); on
// the peer's `auth`, verify it and send `welcome`; done when we have verified
// the peer AND received its `welcome` (it verified us). Any failure: `refused`
// to the peer, close, and reject with a ProtocolError that says why.
import { computeProof, importSecret, randomNonce, verifyProof } from "../protocol/auth.ts";
import { decodeControl, encodeControl } from "../protocol/control-codec.ts";
import { ProtocolError } from "../protocol/errors.ts";
import { MAX_TEXT_FIELD, MIN_SECRET_BYTES, PROTOCOL_NAME, SUPPORTED_VERSIONS } from "../protocol/limits.ts";
import type { ChallengeMessage, ControlMessage, NodeRole } from "../protocol/messages.ts";
import { SessionOrder } from "../protocol/session-order.ts";
import type { InboundMessage, Transport } from "../transport/transport.ts";
import { ReplicationChannel } from "./channel.ts";

export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

export interface HandshakeOptions {
  /** The failover epoch this node is at (primary) or has last seen (secondary). Default 1. */
  epoch?: number;
  nodeId?: string;
  timeoutMs?: number;
  /** Versions to offer; defaults to all this build speaks. */
  versions?: { min: number; max: number };
}

export async function handshake(transport: Transport, role: NodeRole, secret: Uint8Array, options: HandshakeOptions = {}): Promise<ReplicationChannel> {
  if (secret.length < MIN_SECRET_BYTES) throw new RangeError(`replication secret is ${secret.length} bytes, at least ${MIN_SECRET_BYTES} are required`);
  const key = await importSecret(secret);
  const versions = options.versions ?? SUPPORTED_VERSIONS;
  const ours: ChallengeMessage = {
    type: "challenge",
    protocol: PROTOCOL_NAME,
    minVersion: versions.min,
    maxVersion: versions.max,
    role,
    epoch: options.epoch ?? 1,
    nonce: randomNonce(),
    nodeId: (options.nodeId ?? role).slice(0, 64),
  };
  const timeoutMs = options.timeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
  const order = new SessionOrder(role);

  return new Promise<ReplicationChannel>((resolve, reject) => {
    let settled = false;
    let peer: ChallengeMessage | undefined;
    let version = 0;
    let peerVerified = false;
    let welcomed = false;
    // Our sends that wait on crypto go through one chain, so `welcome` never overtakes `auth`.
    let outgoing: Promise<void> = Promise.resolve();

    const fail = (error: ProtocolError, tellPeer: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      transport.onMessage(undefined);
      if (tellPeer && transport.isOpen) {
        try {
          transport.sendText(encodeControl({ type: "refused", code: error.code, message: error.message.slice(0, MAX_TEXT_FIELD) }));
        } catch {
          // closing below anyway
        }
      }
      transport.close(`handshake failed: ${error.message}`);
      reject(error);
    };

    const finishIfDone = (): void => {
      if (settled || !peerVerified || !welcomed || peer === undefined) return;
      settled = true;
      clearTimeout(timer);
      order.authenticated(role === "primary" ? ours.epoch : peer.epoch);
      resolve(new ReplicationChannel(transport, { version, localRole: role, peerRole: peer.role, peerNodeId: peer.nodeId, order }));
    };

    const later = (work: () => Promise<void>): void => {
      outgoing = outgoing.then(async () => {
        if (!settled) await work();
      });
      outgoing.catch((error: unknown) => fail(asProtocolError(error), true));
    };

    const onPeerMessage = (message: ControlMessage): void => {
      switch (message.type) {
        case "refused":
        case "error":
          return fail(new ProtocolError("refused", `peer refused the handshake: ${message.message}`), false);
        case "challenge": {
          peer = message;
          version = checkChallenge(ours, message);
          const challenge = message;
          return later(async () => transport.sendText(encodeControl({ type: "auth", version, proof: await computeProof(key, ours, challenge, version) })));
        }
        case "auth": {
          if (message.version !== version) throw new ProtocolError("version", `peer authenticated for version ${message.version}, negotiated ${version}`);
          const proof = message.proof;
          const prover = peer!;
          return later(async () => {
            if (!(await verifyProof(key, proof, prover, ours, version))) {
              throw new ProtocolError("auth-failed", `${transport.label}: the peer's proof does not match; wrong shared secret?`);
            }
            transport.sendText(encodeControl({ type: "welcome", version }));
            peerVerified = true;
            finishIfDone();
          });
        }
        case "welcome":
          if (message.version !== version) throw new ProtocolError("version", `peer welcomed version ${message.version}, negotiated ${version}`);
          // From here on messages belong to the session: hold them in the transport for the channel.
          transport.onMessage(undefined);
          welcomed = true;
          return finishIfDone();
        default:
          throw new ProtocolError("unauthenticated", `${message.type} during the handshake`);
      }
    };

    const onRaw = (raw: InboundMessage): void => {
      if (settled) return;
      try {
        // Binary frames are refused undecoded: nothing from an unauthenticated peer reaches a decoder but JSON.
        if (raw.kind === "binary") throw new ProtocolError("unauthenticated", "binary frame before authentication");
        const message = decodeControl(raw.text);
        order.receive({ channel: "control", message });
        onPeerMessage(message);
      } catch (error) {
        fail(asProtocolError(error), true);
      }
    };

    const timer = setTimeout(
      () => fail(new ProtocolError("timeout", `handshake with ${transport.label} did not finish within ${timeoutMs} ms`), true),
      timeoutMs,
    );
    transport.onClose((info) => fail(new ProtocolError("closed", `${transport.label} closed during the handshake: ${info.reason}`), false));
    transport.onMessage(onRaw);
    try {
      transport.sendText(encodeControl(ours));
    } catch (error) {
      fail(new ProtocolError("closed", `cannot send the challenge to ${transport.label}: ${(error as Error).message}`), false);
    }
  });
}

/** Checks the peer's challenge against ours and returns the version both speak. */
function checkChallenge(ours: ChallengeMessage, peer: ChallengeMessage): number {
  if (peer.nonce === ours.nonce) throw new ProtocolError("auth-failed", "the peer echoed our nonce (a reflection attempt?)");
  if (peer.role === ours.role) {
    throw new ProtocolError("role-conflict", `both ends claim to be ${ours.role} (local epoch ${ours.epoch}, peer epoch ${peer.epoch})`);
  }
  const primary = ours.role === "primary" ? ours : peer;
  const secondary = ours.role === "primary" ? peer : ours;
  if (primary.epoch < secondary.epoch) {
    throw new ProtocolError("stale-epoch", `the primary is at epoch ${primary.epoch}, but the secondary has seen epoch ${secondary.epoch}`);
  }
  const version = Math.min(ours.maxVersion, peer.maxVersion);
  if (version < Math.max(ours.minVersion, peer.minVersion)) {
    throw new ProtocolError("version", `no common version: we speak ${ours.minVersion}-${ours.maxVersion}, the peer ${peer.minVersion}-${peer.maxVersion}`);
  }
  return version;
}

function asProtocolError(error: unknown): ProtocolError {
  return error instanceof ProtocolError ? error : new ProtocolError("malformed", String(error), { cause: error });
}
