// The guest's NIC with Linux's own virtio_net driver: the test plays the gateway (10.0.2.2)
// byte by byte through `machine.network`, and checks what the guest's stack answers. The
// default guest boots once, with a MAC of the test's choosing; every test starts from a
// snapshot of it.
import { expect } from "chai";
import { Machine } from "../machine.ts";
import { defaultGuest } from "../node/images.ts";
import { SnapshotError } from "../errors.ts";
import { DirtyPageTracker, applyPages } from "../memory/index.ts";
import { MAX_FRAME_BYTES } from "../net/frame.ts";
import { decodeSnapshot, encodeSnapshot } from "../snapshot-format.ts";
import { StatePartTracker, restoreStateParts } from "../state/index.ts";
import {
  BROADCAST_MAC,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  IP_PROTO_ICMP,
  IP_PROTO_TCP,
  TCP_ACK,
  TCP_FIN,
  TCP_PSH,
  TCP_SYN,
  arp,
  ethernet,
  icmpEcho,
  ipv4,
  tcp,
  type TcpSegment,
} from "./helpers/frames.ts";
import { GuestWire, type SentFrame } from "./helpers/guest-wire.ts";

const GUEST_MAC = "52:54:00:0a:0b:0c"; // not the default: the config must reach the guest
const GUEST_IP = "10.0.2.15";
const GATEWAY_MAC = "52:54:00:00:02:02";
const GATEWAY_IP = "10.0.2.2";
const config = { ...defaultGuest(), network: { mac: GUEST_MAC } };

/** 0, 1, 2, ... as bytes: a payload whose every byte is checked on the way back. */
const pattern = (length: number) => Uint8Array.from({ length }, (_, i) => (i * 7 + 3) & 0xff);

function fromGateway(type: number, payload: Uint8Array): Uint8Array {
  return ethernet(GUEST_MAC, GATEWAY_MAC, type, payload);
}

function echoRequest(sequence: number, data: Uint8Array, id = 0x7a7a): Uint8Array {
  return fromGateway(
    ETHERTYPE_IPV4,
    ipv4({ src: GATEWAY_IP, dst: GUEST_IP, protocol: IP_PROTO_ICMP, id: sequence, payload: icmpEcho({ type: 8, id, sequence, data }) }),
  );
}

const echoReply = (sequence: number) => (frame: SentFrame) => frame.icmp?.type === 0 && frame.icmp.sequence === sequence && frame.ip?.dst === GATEWAY_IP;

async function run(machine: Machine, command: string): Promise<string> {
  const { output, exitCode } = await machine.exec(command, { timeoutMs: 60_000 });
  expect(exitCode, `${command}\n${output}`).to.equal(0);
  return output;
}

/** Sends an echo request and checks every field of the reply; returns the reply. */
async function expectEchoAnswered(wire: GuestWire, sequence: number, data = pattern(56)): Promise<SentFrame> {
  const from = wire.mark;
  expect(wire.send(echoRequest(sequence, data))).to.equal("taken");
  const reply = await wire.waitFor(echoReply(sequence), { from, what: `ICMP echo reply ${sequence}` });
  expect(reply.bytes.length).to.equal(14 + 20 + 8 + data.length);
  expect(reply.ethernet).to.deep.include({ dst: GATEWAY_MAC, src: wire.machine.network.mac, type: ETHERTYPE_IPV4 });
  // The parsers checked the IPv4 header and ICMP checksums.
  expect(reply.ip).to.deep.include({ src: GUEST_IP, dst: GATEWAY_IP, protocol: IP_PROTO_ICMP, ttl: 64 });
  expect(reply.icmp).to.deep.include({ type: 0, code: 0, id: 0x7a7a, sequence });
  expect(Buffer.from(reply.icmp!.data).equals(Buffer.from(data)), "echoed data").to.equal(true);
  return reply;
}

describe("network: virtio-net with Linux's driver", function () {
  let booted: Uint8Array;
  const machines: Machine[] = [];
  const wires: GuestWire[] = [];

  before(async function () {
    const machine = new Machine(config);
    machines.push(machine);
    await machine.boot();
    booted = await machine.snapshot();
    await machine.destroy();
  });

  after(async () => {
    for (const wire of wires) wire.close();
    await Promise.all(machines.map((m) => m.destroy()));
  });

  async function restored(bytes = booted, withConfig: Parameters<typeof Machine.fromSnapshot>[1] = config): Promise<{ machine: Machine; wire: GuestWire }> {
    const machine = await Machine.fromSnapshot(bytes, withConfig);
    machines.push(machine);
    const wire = new GuestWire(machine);
    wires.push(wire);
    return { machine, wire };
  }

  it("gives the guest one NIC, eth0 (virtio_net), with the configured MAC, 10.0.2.15/24, a default route via 10.0.2.2, MTU 1500", async () => {
    const { machine } = await restored();
    expect(machine.network.mac).to.equal(GUEST_MAC);
    expect(machine.emulator.isPciSlotFree(5), "v86's default ne2k (PCI slot 5) is not attached").to.equal(true);
    const sysfs = await run(machine, "ls -1 /sys/class/net; cd /sys/class/net/eth0; cat address mtu operstate; basename $(readlink device/driver)");
    expect(sysfs).to.equal(`eth0\nlo\n${GUEST_MAC}\n1500\nup\nvirtio_net\n`);
    expect(await run(machine, "ip addr show dev eth0")).to.match(
      /<BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 .*\n.*link\/ether 52:54:00:0a:0b:0c .*\n.*inet 10\.0\.2\.15\/24 /,
    );
    expect(await run(machine, "ip route")).to.match(/^default via 10\.0\.2\.2 dev eth0/m);
    expect(await run(machine, "ip link show lo")).to.match(/<LOOPBACK,UP,LOWER_UP>/);
  });

  it("hands the guest's frames to onTransmit: ping 10.0.2.2 asks ARP, and succeeds once the test answers as the gateway", async () => {
    const { machine, wire } = await restored();
    const from = wire.mark;
    const pinging = machine.exec("ping -c1 -W30 10.0.2.2", { timeoutMs: 60_000 });
    const whoHas = await wire.waitFor((f) => f.arp?.op === 1 && f.arp.targetIp === GATEWAY_IP, { from, what: "ARP request for 10.0.2.2" });
    expect(whoHas.ethernet).to.deep.include({ dst: BROADCAST_MAC, src: GUEST_MAC, type: ETHERTYPE_ARP });
    expect(whoHas.arp).to.deep.include({ senderMac: GUEST_MAC, senderIp: GUEST_IP });
    const isAt = arp({ op: 2, senderMac: GATEWAY_MAC, senderIp: GATEWAY_IP, targetMac: GUEST_MAC, targetIp: GUEST_IP });
    expect(wire.send(fromGateway(ETHERTYPE_ARP, isAt))).to.equal("taken");

    const request = await wire.waitFor((f) => f.icmp?.type === 8 && f.ip?.dst === GATEWAY_IP, { from, what: "ICMP echo request to 10.0.2.2" });
    expect(request.ethernet).to.deep.include({ dst: GATEWAY_MAC, src: GUEST_MAC });
    expect(request.ip).to.deep.include({ src: GUEST_IP });
    const { id, sequence, data } = request.icmp!;
    const reply = ipv4({ src: GATEWAY_IP, dst: GUEST_IP, protocol: IP_PROTO_ICMP, payload: icmpEcho({ type: 0, id, sequence, data }) });
    expect(wire.send(fromGateway(ETHERTYPE_IPV4, reply))).to.equal("taken");
    const { output, exitCode } = await pinging;
    expect(exitCode, output).to.equal(0);
    expect(output).to.match(/1 packets transmitted, 1 packets received, 0% packet loss/);
    expect(machine.network.metrics.transmittedFrames).to.be.at.least(2);
    expect(machine.network.metrics.receivedFrames).to.equal(2);
  });

  it("answers a crafted ARP request and ICMP echo request from 10.0.2.2 with correct frames", async () => {
    const { wire } = await restored();
    const from = wire.mark;
    const whoHas = arp({ op: 1, senderMac: GATEWAY_MAC, senderIp: GATEWAY_IP, targetMac: BROADCAST_MAC, targetIp: GUEST_IP });
    expect(wire.send(ethernet(BROADCAST_MAC, GATEWAY_MAC, ETHERTYPE_ARP, whoHas))).to.equal("taken");
    const isAt = await wire.waitFor((f) => f.arp?.op === 2, { from, what: "ARP reply" });
    expect(isAt.ethernet).to.deep.include({ dst: GATEWAY_MAC, src: GUEST_MAC, type: ETHERTYPE_ARP });
    expect(isAt.arp).to.deep.equal({ op: 2, senderMac: GUEST_MAC, senderIp: GUEST_IP, targetMac: GATEWAY_MAC, targetIp: GATEWAY_IP });
    wire.answerArp(GATEWAY_IP, GATEWAY_MAC); // should the guest ask before it replies
    await expectEchoAnswered(wire, 1);
    await expectEchoAnswered(wire, 2, pattern(1));
  });

  it("carries a TCP connection to the guest's echo service (busybox nc -ll -e cat) and back", async () => {
    const { machine, wire } = await restored();
    // Started in the background; the loop waits until it listens.
    await run(
      machine,
      "nc -ll -p 7 -e cat </dev/null >/dev/null 2>&1 & for i in $(seq 100); do netstat -tln | grep -q ':7 ' && exit 0; sleep 0.1; done; exit 1",
    );
    wire.answerArp(GATEWAY_IP, GATEWAY_MAC);
    const port = 40_001;
    const segment = (s: Omit<TcpSegment, "srcPort" | "dstPort">) =>
      fromGateway(
        ETHERTYPE_IPV4,
        ipv4({ src: GATEWAY_IP, dst: GUEST_IP, protocol: IP_PROTO_TCP, payload: tcp(GATEWAY_IP, GUEST_IP, { srcPort: port, dstPort: 7, ...s }) }),
      );
    const fromEcho = (match: (t: Required<TcpSegment>) => boolean) => (f: SentFrame) =>
      f.tcp !== undefined && f.ip?.dst === GATEWAY_IP && f.tcp.srcPort === 7 && f.tcp.dstPort === port && match(f.tcp);

    const isn = 0x1000_0000;
    let from = wire.mark;
    expect(wire.send(segment({ seq: isn, ack: 0, flags: TCP_SYN }))).to.equal("taken");
    const synAck = await wire.waitFor(
      fromEcho((t) => t.flags === (TCP_SYN | TCP_ACK)),
      { from, what: "SYN-ACK from port 7" },
    );
    expect(synAck.tcp!.ack).to.equal(isn + 1);
    const guestIsn = synAck.tcp!.seq;
    const message = new TextEncoder().encode("twinvm says hello over TCP\n");
    from = wire.mark;
    wire.send(segment({ seq: isn + 1, ack: guestIsn + 1, flags: TCP_ACK }));
    wire.send(segment({ seq: isn + 1, ack: guestIsn + 1, flags: TCP_PSH | TCP_ACK, data: message }));
    const echoed = await wire.waitFor(
      fromEcho((t) => t.data.length > 0),
      { from, what: "echoed data" },
    );
    expect(echoed.tcp).to.deep.include({ seq: guestIsn + 1, ack: isn + 1 + message.length });
    expect(new TextDecoder().decode(echoed.tcp!.data)).to.equal("twinvm says hello over TCP\n");

    // Our FIN ends cat's input; cat exits and the guest closes its side.
    from = wire.mark;
    const afterData = isn + 1 + message.length;
    wire.send(segment({ seq: afterData, ack: guestIsn + 1 + message.length, flags: TCP_FIN | TCP_ACK }));
    const fin = await wire.waitFor(
      fromEcho((t) => (t.flags & TCP_FIN) !== 0),
      { from, what: "FIN from port 7" },
    );
    expect(fin.tcp).to.deep.include({ seq: guestIsn + 1 + message.length, ack: afterData + 1 });
    wire.send(segment({ seq: afterData + 1, ack: fin.tcp!.seq + 1, flags: TCP_ACK }));
  });

  it("drops and counts frames too large or too short for the NIC; the largest frame goes both ways", async () => {
    const { machine, wire } = await restored();
    wire.answerArp(GATEWAY_IP, GATEWAY_MAC);
    expect(wire.send(new Uint8Array(MAX_FRAME_BYTES + 1).fill(0xff))).to.equal("oversized");
    expect(wire.send(new Uint8Array(13).fill(0xff))).to.equal("runt");
    expect(wire.send(new Uint8Array(0))).to.equal("runt");
    const largest = echoRequest(7, pattern(1500 - 20 - 8));
    expect(largest.length).to.equal(MAX_FRAME_BYTES);
    const reply = await expectEchoAnswered(wire, 7, pattern(1500 - 20 - 8));
    expect(reply.bytes.length).to.equal(MAX_FRAME_BYTES);
    const metrics = machine.network.metrics.snapshot();
    expect(metrics.receiveDropped).to.deep.equal({ oversized: 1, runt: 2, "no-buffer": 0, "not-ready": 0 });
    // Linux never hands the NIC a frame above its MTU: network-port.test.ts drives that path.
    expect(metrics.transmitDropped).to.deep.equal({ oversized: 0, runt: 0 });
    expect(metrics.receivedFrames, "the echo request and any ARP answers").to.equal(wire.outcomes.filter((o) => o === "taken").length);
    expect(await run(machine, "echo alive")).to.equal("alive\n");
  });

  it("drops and counts frames the guest has no receive buffer for, without v86's console message, and takes frames again once it refilled", async () => {
    const { machine, wire } = await restored();
    wire.answerArp(GATEWAY_IP, GATEWAY_MAC);
    // Paused, the guest cannot refill its receive ring: every frame past the ring's size finds no buffer.
    await machine.pause();
    const junk = ethernet(BROADCAST_MAC, GATEWAY_MAC, 0x88b5, pattern(100)); // a local experimental EtherType the guest ignores
    const logged: unknown[][] = [];
    const log = console.log;
    console.log = (...args: unknown[]) => void logged.push(args);
    let outcomes: string[];
    try {
      outcomes = Array.from({ length: 1500 }, () => wire.send(junk));
    } finally {
      console.log = log;
    }
    const taken = outcomes.indexOf("no-buffer");
    expect(taken, "frames that found a buffer").to.be.within(64, 1024);
    expect(new Set(outcomes.slice(0, taken))).to.deep.equal(new Set(["taken"]));
    expect(new Set(outcomes.slice(taken))).to.deep.equal(new Set(["no-buffer"]));
    expect(logged, "v86's 'No buffer to write into!'").to.deep.equal([]);
    expect(machine.network.metrics.receiveDropped["no-buffer"]).to.equal(1500 - taken);
    expect(machine.network.lastIngressId, "dropped frames count as handed over").to.equal(1499);
    machine.run();
    expect(await run(machine, "echo alive")).to.equal("alive\n");
    await expectEchoAnswered(wire, 9);
  });

  it("keeps the MAC and the ingress watermark in a snapshot; the restored guest answers with the same MAC", async () => {
    const { machine, wire } = await restored();
    wire.answerArp(GATEWAY_IP, GATEWAY_MAC);
    await expectEchoAnswered(wire, 1);
    const last = machine.network.lastIngressId;
    expect(last).to.be.a("number");
    const bytes = await machine.snapshot();

    // A config with the default MAC: the guest's driver already has the MAC of the state, which wins.
    const { machine: copy, wire: copyWire } = await restored(bytes, defaultGuest());
    expect(copy.network.mac).to.equal(GUEST_MAC);
    expect(copy.network.lastIngressId).to.equal(last);
    expect(() => copy.network.receive(echoRequest(2, pattern(8)), last!)).to.throw(RangeError, /does not follow/);
    expect(await run(copy, "cat /sys/class/net/eth0/address")).to.equal(`${GUEST_MAC}\n`);
    copyWire.answerArp(GATEWAY_IP, GATEWAY_MAC);
    await expectEchoAnswered(copyWire, 2);
    expect(copy.network.lastIngressId).to.be.greaterThan(last!);
  });

  it("keeps the MAC and the ingress watermark through a memory-less capture into a blank machine (the replication path)", async () => {
    const { machine, wire } = await restored();
    wire.answerArp(GATEWAY_IP, GATEWAY_MAC);
    await expectEchoAnswered(wire, 3);
    const blank = await Machine.createBlank(defaultGuest());
    machines.push(blank);
    await machine.pause();
    const tracker = DirtyPageTracker.create(machine);
    const pages = tracker.collect();
    tracker.dispose();
    const parts = new StatePartTracker(machine).capture().changed.map((part) => part.current);
    const last = machine.network.lastIngressId;

    applyPages(blank, pages);
    restoreStateParts(blank, parts);
    expect(blank.network.lastIngressId).to.equal(last);
    expect(blank.network.mac).to.equal(GUEST_MAC);
    blank.run();
    const replicaWire = new GuestWire(blank);
    wires.push(replicaWire);
    replicaWire.answerArp(GATEWAY_IP, GATEWAY_MAC);
    await expectEchoAnswered(replicaWire, 4);
  });

  it("refuses a snapshot without the NIC's state (taken by a build without it) before v86 sees it", async () => {
    const { meta, v86State } = decodeSnapshot(booted);
    delete meta.devices["virtio-net"];
    const error = await Machine.fromSnapshot(encodeSnapshot(meta, v86State), config).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).to.be.instanceOf(SnapshotError);
    expect((error as Error).message).to.match(/has no state for device virtio-net/);
  });
});
