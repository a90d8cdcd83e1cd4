// The network link's mutual handshake: the replication link's scheme (auth.ts's HMAC
// challenge-response, record-layer.ts's keys and records) under its own protocol name,
// which is in every challenge, in the proofs' transcript and in the keys' derivation. A
// node that dials a replication peer, or a primary that dials a gateway, fails here with
// "wrong-peer" before anyone proved anything.
//
//   both:      challenge {protocol, role, versions, nonce, nodeId}
//   node:      auth {version, proof over both challenges}     (the dialling side proves first)
//   gateway:   verifies; auth {its proof}                      (or refused, and no proof)
//   node:      verifies; from here on every message is a sealed record
import { constantTimeEqual, fromBase64, importSecret, randomNonce, toBase64 } from "../protocol/auth.ts";
import { MIN_SECRET_BYTES } from "../protocol/limits.ts";
import { RecordLayer, deriveRecordKeys } from "../channel/record-layer.ts";
import type { InboundMessage, Transport } from "../transport/transport.ts";
import { NetworkLinkError } from "./link-errors.ts";
import { DEFAULT_LINK_HANDSHAKE_TIMEOUT_MS, LINK_PROTOCOL, LINK_VERSIONS, MAX_LINK_TEXT } from "./link-limits.ts";
import { decodeHandshake, encodeHandshake, type HandshakeMessage, type LinkRole } from "./link-messages.ts";

type Challenge = Extract<HandshakeMessage, { type: "challenge" }>;

const PROOF_LABEL = `${LINK_PROTOCOL}/auth-proof/v1`;

export interface LinkHandshakeOptions {
  nodeId?: string;
  timeoutMs?: number;
  versions?: { min: number; max: number };
}

/** Both sides proved the secret: what the session needs. */
export interface AuthenticatedLink {
  transport: Transport;
  records: RecordLayer;
  version: number;
  role: LinkRole;
  peerNodeId: string;
}

/** The node dials and proves first; the gateway accepts. Rejects with NetworkLinkError; the transport is closed then. */
export async function linkHandshake(transport: Transport, role: LinkRole, secret: Uint8Array, options: LinkHandshakeOptions = {}): Promise<AuthenticatedLink> {
  if (secret.length < MIN_SECRET_BYTES) throw new RangeError(`network link secret is ${secret.length} bytes, at least ${MIN_SECRET_BYTES} are required`);
  const key = await importSecret(secret);
  const versions = options.versions ?? LINK_VERSIONS;
  const initiator = role === "node";
  const ours: Challenge = {
    type: "challenge",
    protocol: LINK_PROTOCOL,
    role,
    minVersion: versions.min,
    maxVersion: versions.max,
    nonce: randomNonce(),
    nodeId: (options.nodeId ?? role).slice(0, 64),
  };
  const timeoutMs = options.timeoutMs ?? DEFAULT_LINK_HANDSHAKE_TIMEOUT_MS;

  return new Promise<AuthenticatedLink>((resolve, reject) => {
    let settled = false;
    let peer: Challenge | undefined;
    let version = 0;
    let sentAuth = false;
    let steps: Promise<void> = Promise.resolve();

    const fail = (error: NetworkLinkError, tellPeer: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      transport.onMessage(undefined);
      if (tellPeer && transport.isOpen) {
        try {
          transport.sendText(encodeHandshake({ type: "refused", code: error.code, message: error.message.slice(0, MAX_LINK_TEXT) }));
        } catch {
          // closing below anyway
        }
      }
      transport.close(`handshake failed: ${error.message}`);
      reject(error);
    };

    const step = (work: () => Promise<void>): void => {
      steps = steps.then(async () => {
        if (!settled) await work();
      });
      steps.catch((error: unknown) => fail(asLinkError(error), true));
    };

    const sendAuth = async (): Promise<void> => {
      sentAuth = true;
      transport.sendText(encodeHandshake({ type: "auth", version, proof: await computeProof(key, ours, peer!, version) }));
    };

    const finish = async (): Promise<void> => {
      const [initiatorNonce, acceptorNonce] = initiator ? [ours.nonce, peer!.nonce] : [peer!.nonce, ours.nonce];
      const keys = await deriveRecordKeys(secret, fromBase64(initiatorNonce), fromBase64(acceptorNonce), version, initiator, "auto", LINK_PROTOCOL);
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ transport, records: new RecordLayer(keys), version, role, peerNodeId: peer!.nodeId });
    };

    const onPeerMessage = (message: HandshakeMessage): void => {
      switch (message.type) {
        case "refused":
          // Unauthenticated: a reason to stop and to say why, nothing more.
          return fail(new NetworkLinkError("refused", `${transport.label} refused the handshake: ${message.message}`), false);
        case "challenge":
          if (peer !== undefined) throw new NetworkLinkError("order", "a second challenge");
          peer = message;
          version = checkChallenge(ours, message);
          if (initiator) step(sendAuth);
          return;
        case "auth": {
          if (peer === undefined) throw new NetworkLinkError("order", "auth before the challenge");
          if (message.version !== version) throw new NetworkLinkError("version", `peer authenticated for version ${message.version}, negotiated ${version}`);
          if (initiator && !sentAuth) throw new NetworkLinkError("order", "the gateway sent its proof before ours");
          const proof = message.proof;
          // What follows is session traffic: the transport holds it for the session.
          transport.onMessage(undefined);
          return step(async () => {
            if (!(await verifyProof(key, proof, peer!, ours, version))) {
              throw new NetworkLinkError("auth-failed", `${transport.label}: the peer's proof does not match; wrong shared secret?`);
            }
            if (!initiator) await sendAuth();
            await finish();
          });
        }
      }
    };

    const onRaw = (raw: InboundMessage): void => {
      if (settled) return;
      try {
        // Nothing from an unauthenticated peer reaches a decoder but the JSON one.
        if (raw.kind === "binary") throw new NetworkLinkError("order", "binary message before authentication");
        onPeerMessage(decodeHandshake(raw.text));
      } catch (error) {
        fail(asLinkError(error), true);
      }
    };

    const timer = setTimeout(
      () => fail(new NetworkLinkError("timeout", `handshake with ${transport.label} did not finish within ${timeoutMs} ms`), true),
      timeoutMs,
    );
    transport.onClose((info) => {
      const closedNow = () => fail(new NetworkLinkError("closed", `${transport.label} closed during the handshake: ${info.reason}`), false);
      steps = steps.then(closedNow, closedNow);
    });
    transport.onMessage(onRaw);
    try {
      transport.sendText(encodeHandshake(ours));
    } catch (error) {
      fail(new NetworkLinkError("closed", `cannot send the challenge to ${transport.label}: ${(error as Error).message}`), false);
    }
  });
}

function checkChallenge(ours: Challenge, peer: Challenge): number {
  if (peer.nonce === ours.nonce) throw new NetworkLinkError("auth-failed", "the peer echoed our nonce (a reflection attempt?)");
  if (peer.role === ours.role) throw new NetworkLinkError("wrong-peer", `both ends claim to be the ${ours.role}`);
  const version = Math.min(ours.maxVersion, peer.maxVersion);
  if (version < Math.max(ours.minVersion, peer.minVersion)) {
    throw new NetworkLinkError("version", `no common version: we speak ${ours.minVersion}-${ours.maxVersion}, the peer ${peer.minVersion}-${peer.maxVersion}`);
  }
  return version;
}

async function computeProof(key: CryptoKey, prover: Challenge, verifier: Challenge, version: number): Promise<string> {
  const fields = (c: Challenge) => [c.protocol, c.role, c.minVersion, c.maxVersion, c.nonce, c.nodeId];
  const transcript = JSON.stringify([PROOF_LABEL, version, fields(prover), fields(verifier)]);
  return toBase64(new Uint8Array(await globalThis.crypto.subtle.sign("HMAC", key, new TextEncoder().encode(transcript))));
}

async function verifyProof(key: CryptoKey, proof: string, prover: Challenge, verifier: Challenge, version: number): Promise<boolean> {
  return constantTimeEqual(fromBase64(proof), fromBase64(await computeProof(key, prover, verifier, version)));
}

function asLinkError(error: unknown): NetworkLinkError {
  return error instanceof NetworkLinkError ? error : new NetworkLinkError("malformed", String(error), { cause: error });
}
