// A guest's TCP in miniature for the gateway tests: reads and writes raw Ethernet/IPv4/TCP
// frames, answers a SYN on its port, acknowledges in-order data and echoes it back. No
// retransmission, no window handling: enough to carry a short exchange through real passt.
// Its state is plain data, so a test can "replicate" it to a second fake node.
import { ETHERTYPE_IPV4, etherType, formatIpv4, formatMac, parseIpv4, parseMac } from "../../replication/network/ethernet.ts";

export const TCP_FLAGS = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10 } as const;

export interface TcpSegment {
  srcMac: string;
  dstMac: string;
  srcIp: string;
  dstIp: string;
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  flags: number;
  payload: Uint8Array;
}

export function parseTcp(frame: Uint8Array): TcpSegment | undefined {
  if (frame.length < 14 + 20 + 20 || etherType(frame) !== ETHERTYPE_IPV4) return undefined;
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const ihl = (frame[14]! & 0x0f) * 4;
  if (frame[23] !== 6) return undefined;
  const total = view.getUint16(16);
  const tcp = 14 + ihl;
  const dataOffset = (frame[tcp + 12]! >> 4) * 4;
  return {
    dstMac: formatMac(frame.subarray(0, 6)),
    srcMac: formatMac(frame.subarray(6, 12)),
    srcIp: formatIpv4(frame.subarray(26, 30)),
    dstIp: formatIpv4(frame.subarray(30, 34)),
    srcPort: view.getUint16(tcp),
    dstPort: view.getUint16(tcp + 2),
    seq: view.getUint32(tcp + 4),
    ack: view.getUint32(tcp + 8),
    flags: frame[tcp + 13]!,
    payload: frame.slice(tcp + dataOffset, 14 + total),
  };
}

export function buildTcp(segment: TcpSegment): Uint8Array {
  const frame = new Uint8Array(14 + 20 + 20 + segment.payload.length);
  const view = new DataView(frame.buffer);
  frame.set(parseMac(segment.dstMac), 0);
  frame.set(parseMac(segment.srcMac), 6);
  view.setUint16(12, ETHERTYPE_IPV4);
  frame[14] = 0x45;
  view.setUint16(16, 20 + 20 + segment.payload.length);
  view.setUint16(20, 0x4000); // don't fragment
  frame[22] = 64;
  frame[23] = 6;
  frame.set(parseIpv4(segment.srcIp), 26);
  frame.set(parseIpv4(segment.dstIp), 30);
  view.setUint16(24, checksum(frame.subarray(14, 34)));
  const tcp = 34;
  view.setUint16(tcp, segment.srcPort);
  view.setUint16(tcp + 2, segment.dstPort);
  view.setUint32(tcp + 4, segment.seq >>> 0);
  view.setUint32(tcp + 8, segment.ack >>> 0);
  frame[tcp + 12] = 5 << 4;
  frame[tcp + 13] = segment.flags;
  view.setUint16(tcp + 14, 65535);
  frame.set(segment.payload, tcp + 20);
  const pseudo = new Uint8Array(12 + 20 + segment.payload.length);
  pseudo.set(frame.subarray(26, 34), 0);
  pseudo[9] = 6;
  new DataView(pseudo.buffer).setUint16(10, 20 + segment.payload.length);
  pseudo.set(frame.subarray(tcp), 12);
  view.setUint16(tcp + 16, checksum(pseudo));
  return frame;
}

function checksum(bytes: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i += 2) sum += (bytes[i]! << 8) | (bytes[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

interface Connection {
  peerMac: string;
  peerIp: string;
  peerPort: number;
  rcvNxt: number;
  sndNxt: number;
}

export interface FakeGuestState {
  connections: Connection[];
  /** What the guest received on each connection, as text. */
  received: Record<number, string>;
  lastIngressId: number;
}

export class FakeTcpGuest {
  readonly state: FakeGuestState;

  constructor(
    private readonly address: { mac: string; ip: string; port: number },
    private readonly transmit: (frames: Uint8Array[]) => void,
    state?: FakeGuestState,
  ) {
    this.state = state ? structuredClone(state) : { connections: [], received: {}, lastIngressId: 0 };
  }

  /** Takes one ingress frame into the "guest state" (what a NIC receive would do). */
  receive(frame: Uint8Array, id: number): void {
    this.state.lastIngressId = id;
    const segment = parseTcp(frame);
    if (segment === undefined || segment.dstIp !== this.address.ip || segment.dstPort !== this.address.port) return;
    let connection = this.state.connections.find((c) => c.peerPort === segment.srcPort && c.peerIp === segment.srcIp);
    if (segment.flags & TCP_FLAGS.SYN) {
      connection = { peerMac: segment.srcMac, peerIp: segment.srcIp, peerPort: segment.srcPort, rcvNxt: (segment.seq + 1) >>> 0, sndNxt: 0x1000_0000 };
      this.state.connections = this.state.connections.filter((c) => c.peerPort !== segment.srcPort);
      this.state.connections.push(connection);
      this.state.received[segment.srcPort] = "";
      this.#send(connection, TCP_FLAGS.SYN | TCP_FLAGS.ACK, new Uint8Array(0));
      connection.sndNxt = (connection.sndNxt + 1) >>> 0;
      return;
    }
    if (connection === undefined) return;
    if (segment.payload.length > 0 && segment.seq === connection.rcvNxt) {
      connection.rcvNxt = (connection.rcvNxt + segment.payload.length) >>> 0;
      this.state.received[segment.srcPort] += new TextDecoder().decode(segment.payload);
      this.#send(connection, TCP_FLAGS.ACK | TCP_FLAGS.PSH, segment.payload); // the echo carries the ACK
      connection.sndNxt = (connection.sndNxt + segment.payload.length) >>> 0;
    }
    if (segment.flags & TCP_FLAGS.FIN) {
      connection.rcvNxt = (connection.rcvNxt + 1) >>> 0;
      this.#send(connection, TCP_FLAGS.FIN | TCP_FLAGS.ACK, new Uint8Array(0));
      connection.sndNxt = (connection.sndNxt + 1) >>> 0;
    }
  }

  #send(connection: Connection, flags: number, payload: Uint8Array): void {
    this.transmit([
      buildTcp({
        srcMac: this.address.mac,
        dstMac: connection.peerMac,
        srcIp: this.address.ip,
        dstIp: connection.peerIp,
        srcPort: this.address.port,
        dstPort: connection.peerPort,
        seq: connection.sndNxt,
        ack: connection.rcvNxt,
        flags,
        payload,
      }),
    ]);
  }
}
