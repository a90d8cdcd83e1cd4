// The versioned, mutual handshake, then the keys of the record layer. The side that dialled
// (the initiator, normally the primary) proves itself first; the accepting side verifies that
// proof before it reveals its own, so a caller without the secret learns nothing to guess it
// from. Nothing a peer claims (its epoch above all) is acted on before its proof verified.
//
//   both:      challenge {role, epoch, versions, nonce, nodeId}
//   initiator: auth {version, proof over both challenges}
//   acceptor:  verifies; auth {its proof}            (or refused auth-failed, and no proof)
//   initiator: verifies; first record (encrypted): welcome
//
// After mutual proof both sides compare epochs the same way; a primary below the secondary's
// epoch gets StaleEpochError, which is authenticated and so safe to fence on.
import { computeProof, fromBase64, importSecret, randomNonce, verifyProof } from "../protocol/auth.ts";
import { decodeControl, encodeControl } from "../protocol/control-codec.ts";
import { ProtocolError } from "../protocol/errors.ts";
import { MAX_TEXT_FIELD, MIN_SECRET_BYTES, PROTOCOL_NAME, SUPPORTED_VERSIONS } from "../protocol/limits.ts";
import type { ChallengeMessage, ControlMessage, NodeRole } from "../protocol/messages.ts";
import { sessionOrderFor } from "../protocol/session-order-for.ts";
import { systemClock, type Clock } from "../clock.ts";
import type { InboundMessage, Transport } from "../transport/transport.ts";
import { ReplicationChannel } from "./channel.ts";
import { RecordLayer, RecordType, deriveRecordKeys } from "./record-layer.ts";

export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

export interface HandshakeOptions {
  /** The failover epoch this node is at (primary) or has last seen (secondary). Default 1. */
  epoch?: number;
  nodeId?: string;
  timeoutMs?: number;
  /** Versions to offer; defaults to all this build speaks. */
  versions?: { min: number; max: number };
  /** Whether this side dialled (proves first). Default: the primary dials. */
  initiator?: boolean;
  /** The clock of the timeout (tests pass a manual one). */
  clock?: Clock;
}

/** The peer proved the secret and has seen a newer epoch than this primary: it took over. */
export class StaleEpochError extends ProtocolError {
  constructor(
    readonly ourEpoch: number,
    readonly peerEpoch: number,
    message: string,
  ) {
    super("stale-epoch", message);
  }
}

export async function handshake(transport: Transport, role: NodeRole, secret: Uint8Array, options: HandshakeOptions = {}): Promise<ReplicationChannel> {
  if (secret.length < MIN_SECRET_BYTES) throw new RangeError(`replication secret is ${secret.length} bytes, at least ${MIN_SECRET_BYTES} are required`);
  const key = await importSecret(secret);
  const versions = options.versions ?? SUPPORTED_VERSIONS;
  const initiator = options.initiator ?? role === "primary";
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
  const order = sessionOrderFor(role);

  return new Promise<ReplicationChannel>((resolve, reject) => {
    let settled = false;
    let peer: ChallengeMessage | undefined;
    let version = 0;
    let sentAuth = false;
    let records: RecordLayer | undefined;
    // Crypto steps are asynchronous: one chain keeps them, and our sends, in order.
    let steps: Promise<void> = Promise.resolve();

    const fail = (error: ProtocolError, tellPeer: boolean): void => {
      if (settled) return;
      settled = true;
      timer.cancel();
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

    const finish = (layer: RecordLayer): void => {
      if (settled) return;
      settled = true;
      timer.cancel();
      order.authenticated(role === "primary" ? ours.epoch : peer!.epoch);
      resolve(new ReplicationChannel(transport, layer, { version, localRole: role, peerRole: peer!.role, peerNodeId: peer!.nodeId, order }));
    };

    const step = (work: () => Promise<void>): void => {
      steps = steps.then(async () => {
        if (!settled) await work();
      });
      steps.catch((error: unknown) => fail(asProtocolError(error), true));
    };

    const sendAuth = async (): Promise<void> => {
      sentAuth = true;
      transport.sendText(encodeControl({ type: "auth", version, proof: await computeProof(key, ours, peer!, version) }));
    };

    /** Both proofs verified: keys, then the epoch rule, which is now authenticated. */
    const authenticated = async (): Promise<RecordLayer> => {
      const [initiatorNonce, acceptorNonce] = initiator ? [ours.nonce, peer!.nonce] : [peer!.nonce, ours.nonce];
      const keys = await deriveRecordKeys(secret, fromBase64(initiatorNonce), fromBase64(acceptorNonce), version, initiator);
      const primary = role === "primary" ? ours : peer!;
      const secondary = role === "primary" ? peer! : ours;
      if (primary.epoch < secondary.epoch) {
        throw new StaleEpochError(
          ours.epoch,
          peer!.epoch,
          `the primary is at epoch ${primary.epoch}, but the secondary (which proved the secret) has seen epoch ${secondary.epoch}: it took over`,
        );
      }
      return new RecordLayer(keys);
    };

    const onPeerMessage = (message: ControlMessage): void => {
      switch (message.type) {
        case "refused":
        case "error":
          // Unauthenticated: a reason to stop, never a reason to fence.
          return fail(new ProtocolError("refused", `peer refused the handshake: ${message.message}`), false);
        case "challenge":
          peer = message;
          version = checkChallenge(ours, message);
          if (initiator) step(sendAuth);
          return;
        case "auth": {
          if (message.version !== version) throw new ProtocolError("version", `peer authenticated for version ${message.version}, negotiated ${version}`);
          if (initiator && !sentAuth) throw new ProtocolError("order", "the accepting side sent its proof before ours");
          const proof = message.proof;
          if (initiator) transport.onMessage(undefined); // what follows is session traffic: hold it for the channel
          return step(async () => {
            if (!(await verifyProof(key, proof, peer!, ours, version))) {
              throw new ProtocolError("auth-failed", `${transport.label}: the peer's proof does not match; wrong shared secret?`);
            }
            if (!initiator) await sendAuth();
            const layer = await authenticated();
            if (initiator) {
              transport.sendBinary(await layer.seal(RecordType.control, new TextEncoder().encode(encodeControl({ type: "welcome", version }))));
              finish(layer);
            } else {
              records = layer;
            }
          });
        }
        default:
          throw new ProtocolError("unauthenticated", `${message.type} during the handshake`);
      }
    };

    /** Acceptor: the first record must be the initiator's welcome (it verified our proof). */
    const onWelcome = (raw: InboundMessage): void => {
      transport.onMessage(undefined); // later records belong to the channel
      step(async () => {
        if (raw.kind !== "binary" || records === undefined) throw new ProtocolError("unauthenticated", "expected the encrypted welcome");
        const { type, payload } = await records.open(raw.bytes);
        const welcome = type === RecordType.control ? decodeControl(new TextDecoder().decode(payload)) : undefined;
        if (welcome?.type !== "welcome" || welcome.version !== version) throw new ProtocolError("order", "the first record is not the welcome");
        finish(records);
      });
    };

    const onRaw = (raw: InboundMessage): void => {
      if (settled) return;
      try {
        if (!initiator && sentAuth) return onWelcome(raw);
        // Binary frames are refused undecoded: nothing from an unauthenticated peer reaches a decoder but JSON.
        if (raw.kind === "binary") throw new ProtocolError("unauthenticated", "binary message before authentication");
        const message = decodeHandshakeMessage(raw.text);
        order.receive({ channel: "control", message });
        onPeerMessage(message);
      } catch (error) {
        fail(asProtocolError(error), true);
      }
    };

    const timer = (options.clock ?? systemClock).setTimeout(
      () => fail(new ProtocolError("timeout", `handshake with ${transport.label} did not finish within ${timeoutMs} ms`), true),
      timeoutMs,
    );
    // After the crypto steps already queued: a peer that proved itself and then closed (it found us stale) is heard out.
    transport.onClose((info) => {
      const closedNow = () => fail(new ProtocolError("closed", `${transport.label} closed during the handshake: ${info.reason}`), false);
      // Either way: a failed step already settled us, and an unhandled rejection would end the process.
      steps = steps.then(closedNow, closedNow);
    });
    transport.onMessage(onRaw);
    try {
      transport.sendText(encodeControl(ours));
    } catch (error) {
      fail(new ProtocolError("closed", `cannot send the challenge to ${transport.label}: ${(error as Error).message}`), false);
    }
  });
}

/** Checks the peer's challenge against ours and returns the version both speak. Epochs wait for the proofs. */
function checkChallenge(ours: ChallengeMessage, peer: ChallengeMessage): number {
  if (peer.nonce === ours.nonce) throw new ProtocolError("auth-failed", "the peer echoed our nonce (a reflection attempt?)");
  if (peer.role === ours.role) throw new ProtocolError("role-conflict", `both ends claim to be ${ours.role}`);
  const version = Math.min(ours.maxVersion, peer.maxVersion);
  if (version < Math.max(ours.minVersion, peer.minVersion)) {
    throw new ProtocolError("version", `no common version: we speak ${ours.minVersion}-${ours.maxVersion}, the peer ${peer.minVersion}-${peer.maxVersion}`);
  }
  return version;
}

/** Like decodeControl, but a challenge of another protocol (the network gateway's) is named as such. */
function decodeHandshakeMessage(text: string): ControlMessage {
  try {
    return decodeControl(text);
  } catch (error) {
    let claim: { protocol?: unknown; role?: unknown } | null;
    try {
      claim = JSON.parse(text) as { protocol?: unknown; role?: unknown } | null;
    } catch {
      throw error;
    }
    const protocol = claim?.protocol;
    if (typeof protocol !== "string" || protocol === PROTOCOL_NAME) throw error;
    const what =
      protocol !== "twinvm-network"
        ? `a peer speaking ${JSON.stringify(protocol.slice(0, 40))}`
        : claim?.role === "gateway"
          ? "a twinvm network gateway"
          : "a node's twinvm network uplink";
    throw new ProtocolError("role-conflict", `the peer is ${what}, not a replication node (${PROTOCOL_NAME}); check the address`);
  }
}

function asProtocolError(error: unknown): ProtocolError {
  return error instanceof ProtocolError ? error : new ProtocolError("malformed", String(error), { cause: error });
}
