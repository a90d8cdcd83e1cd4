// The default guest's network settings from the kernel command line, and the default MAC:
// one boot with `twinvm.ip=` and an empty `twinvm.gw=` and no network config.
import { expect } from "chai";
import { DEFAULT_CMDLINE } from "../config.ts";
import { Machine } from "../machine.ts";
import { DEFAULT_MAC } from "../net/frame.ts";
import { defaultGuest } from "../node/images.ts";
import { ETHERTYPE_ARP } from "./helpers/frames.ts";
import { GuestWire } from "./helpers/guest-wire.ts";

describe("network: kernel arguments of the default guest", function () {
  let machine: Machine;
  let wire: GuestWire;

  before(async function () {
    machine = new Machine({ ...defaultGuest(), cmdline: `${DEFAULT_CMDLINE} twinvm.ip=192.168.50.7/28 twinvm.gw=` });
    await machine.boot();
    wire = new GuestWire(machine);
  });

  after(async () => {
    wire?.close();
    await machine?.destroy();
  });

  async function run(command: string): Promise<string> {
    const { output, exitCode } = await machine.exec(command, { timeoutMs: 60_000 });
    expect(exitCode, `${command}\n${output}`).to.equal(0);
    return output;
  }

  it("gives eth0 the default MAC and the address from twinvm.ip, and no default route for an empty twinvm.gw", async () => {
    expect(machine.network.mac).to.equal(DEFAULT_MAC);
    expect(await run("cat /sys/class/net/eth0/address /sys/class/net/eth0/mtu")).to.equal(`${DEFAULT_MAC}\n1500\n`);
    expect(await run("ip addr show dev eth0")).to.match(/inet 192\.168\.50\.7\/28 /);
    expect(await run("ip route")).to.equal("192.168.50.0/28 dev eth0 scope link  src 192.168.50.7 \n");
    // Without a default route an address off the subnet is unreachable; one on it is asked for by ARP.
    expect((await machine.exec("ping -c1 -W1 10.0.2.2")).output).to.match(/Network is unreachable/);
    const from = wire.mark;
    await machine.exec("ping -c1 -W1 192.168.50.1");
    const whoHas = await wire.waitFor((f) => f.arp?.op === 1, { from, what: "ARP request" });
    expect(whoHas.ethernet.type).to.equal(ETHERTYPE_ARP);
    expect(whoHas.arp).to.deep.include({ senderMac: DEFAULT_MAC, senderIp: "192.168.50.7", targetIp: "192.168.50.1" });
  });
});
