// A test's end of the guest's network cable: records every frame the guest sends, waits for
// the one a test expects, and sends frames in numbered as a gateway would.
import type { Machine } from "../../machine.ts";
import type { ReceiveOutcome } from "../../net/port.ts";
import {
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  IP_PROTO_ICMP,
  IP_PROTO_TCP,
  arp,
  ethernet,
  parseArp,
  parseEthernet,
  parseIcmpEcho,
  parseIpv4,
  parseTcp,
} from "./frames.ts";
import type { Arp, EthernetFrame, IcmpEcho, Ipv4, TcpSegment } from "./frames.ts";

/** A frame the guest sent, decoded as far as its headers go. */
export interface SentFrame {
  bytes: Uint8Array;
  ethernet: EthernetFrame;
  arp?: Arp;
  ip?: Required<Ipv4>;
  icmp?: IcmpEcho & { code: number };
  tcp?: Required<TcpSegment>;
}

export class GuestWire {
  readonly sent: SentFrame[] = [];
  /** What became of each frame this wire handed to the guest, in order. */
  readonly outcomes: ReceiveOutcome[] = [];
  readonly #unsubscribe: () => void;
  #waiters = new Set<() => void>();
  /** IPv4 address -> the MAC this wire answers ARP requests for it with. */
  readonly #arpAnswers = new Map<string, string>();
  #nextId: number;

  constructor(readonly machine: Machine) {
    this.#nextId = (machine.network.lastIngressId ?? -1) + 1;
    this.#unsubscribe = machine.network.onTransmit((bytes) => {
      const frame = decode(bytes);
      this.sent.push(frame);
      const answer = frame.arp?.op === 1 ? this.#arpAnswers.get(frame.arp.targetIp) : undefined;
      // Inside the guest's instruction here: answer once it is over.
      if (answer !== undefined) queueMicrotask(() => this.#answerArp(frame.arp!, answer));
      for (const wake of this.#waiters) wake();
    });
  }

  /** Position after the frames recorded so far, for `waitFor(..., {from})`. */
  get mark(): number {
    return this.sent.length;
  }

  /** The first frame at or after `from` that `match` accepts; rejects after `timeoutMs`. */
  async waitFor(match: (frame: SentFrame) => boolean, { from = 0, timeoutMs = 20_000, what = "a frame" } = {}): Promise<SentFrame> {
    const find = () => this.sent.slice(from).find(match);
    const found = find();
    if (found !== undefined) return found;
    return new Promise((resolve, reject) => {
      const wake = () => {
        const frame = find();
        if (frame === undefined) return;
        cleanup();
        resolve(frame);
      };
      const timer = setTimeout(() => {
        cleanup();
        const seen = this.sent.slice(from).map(describe).join("\n  ");
        reject(new Error(`no ${what} from the guest within ${timeoutMs} ms; it sent:\n  ${seen || "(nothing)"}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.#waiters.delete(wake);
      };
      this.#waiters.add(wake);
    });
  }

  /** Hands a frame to the guest with the next ingress id. */
  send(frame: Uint8Array): ReceiveOutcome {
    const outcome = this.machine.network.receive(frame, this.#nextId++);
    this.outcomes.push(outcome);
    return outcome;
  }

  /** From now on, answers the guest's ARP requests for `ip` with `mac` (as a gateway would). */
  answerArp(ip: string, mac: string): void {
    this.#arpAnswers.set(ip, mac);
  }

  #answerArp(request: Arp, mac: string): void {
    if (this.machine.state === "destroyed") return;
    const reply = arp({ op: 2, senderMac: mac, senderIp: request.targetIp, targetMac: request.senderMac, targetIp: request.senderIp });
    this.send(ethernet(request.senderMac, mac, ETHERTYPE_ARP, reply));
  }

  close(): void {
    this.#unsubscribe();
    this.#waiters.clear();
  }
}

function decode(bytes: Uint8Array): SentFrame {
  const ethernet = parseEthernet(bytes);
  const frame: SentFrame = { bytes, ethernet };
  try {
    if (ethernet.type === ETHERTYPE_ARP) frame.arp = parseArp(ethernet.payload);
    if (ethernet.type === ETHERTYPE_IPV4) {
      const ip = parseIpv4(ethernet.payload);
      frame.ip = ip;
      if (ip.protocol === IP_PROTO_ICMP && (ip.payload[0] === 0 || ip.payload[0] === 8)) frame.icmp = parseIcmpEcho(ip.payload);
      if (ip.protocol === IP_PROTO_TCP) frame.tcp = parseTcp(ip.src, ip.dst, ip.payload);
    }
  } catch {
    // A frame whose checksums are wrong stays undecoded: matches on arp/ip/icmp/tcp fail and the test says so.
  }
  return frame;
}

function describe(frame: SentFrame): string {
  const { ethernet } = frame;
  const head = `${ethernet.src} > ${ethernet.dst} type 0x${ethernet.type.toString(16).padStart(4, "0")} ${frame.bytes.length} bytes`;
  if (frame.arp) return `${head}: ARP ${frame.arp.op === 1 ? "who-has" : "is-at"} ${frame.arp.targetIp} tell ${frame.arp.senderIp}`;
  if (frame.icmp) return `${head}: ICMP echo ${frame.icmp.type === 8 ? "request" : "reply"} ${frame.ip!.src} > ${frame.ip!.dst}`;
  if (frame.tcp) return `${head}: TCP ${frame.ip!.src}:${frame.tcp.srcPort} > ${frame.ip!.dst}:${frame.tcp.dstPort} flags 0x${frame.tcp.flags.toString(16)}`;
  if (frame.ip) return `${head}: IPv4 proto ${frame.ip.protocol} ${frame.ip.src} > ${frame.ip.dst}`;
  return head;
}
