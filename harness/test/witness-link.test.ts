// The arbiter's witness on another host: `startWitness` on the network link's listener, nodes
// asking it with LinkWitness over real WebSockets, authenticated with the pair's secret.
import { expect } from "chai";
import { LinkWitness } from "../../replication/arbiter/link-witness.ts";
import { MAX_LINK_MESSAGE_BYTES } from "../../replication/network/link-limits.ts";
import { connectReplication } from "../../replication/node/ws-transport.ts";
import { startWitness, type WitnessServer } from "../witness/witness-server.ts";

const SECRET = new TextEncoder().encode("witness-link-test-secret-0123456789");
const dial = (url: string) => connectReplication(url, { maxMessageBytes: MAX_LINK_MESSAGE_BYTES });

describe("the witness over the network link", function () {
  this.timeout(20_000);
  let server: WitnessServer;
  const clients: LinkWitness[] = [];

  beforeEach(async () => {
    server = await startWitness({ secret: SECRET, leaseMs: 300 });
  });

  afterEach(async () => {
    for (const client of clients.splice(0)) client.close();
    await server.close();
  });

  function node(name: string, secret = SECRET): LinkWitness {
    const client = new LinkWitness({ url: server.url, secret, nodeId: name, dial, timeoutMs: 2000 });
    clients.push(client);
    return client;
  }

  it("grants a primary's lease, refuses the secondary's claim while it holds, grants it once the lease ran out", async () => {
    const primary = node("primary");
    const secondary = node("secondary");
    expect(await primary.renew("primary", 1)).to.deep.include({ granted: true, epoch: 1, leaseMs: 300 });
    const refused = await secondary.claim("secondary", 2);
    expect(refused).to.deep.include({ granted: false, epoch: 1, holder: "primary" });
    await new Promise((resolve) => setTimeout(resolve, 350));
    expect(await secondary.claim("secondary", 2)).to.deep.include({ granted: true, epoch: 2 });
    const superseded = await primary.renew("primary", 1);
    expect(superseded).to.deep.include({ granted: false, epoch: 2, holder: "secondary" });
    expect(server.core.holder).to.equal("secondary");
  });

  it("a protected primary's hold crosses the link: the secondary's claim is refused with the time to ask again, and granted then", async () => {
    const primary = node("primary");
    const secondary = node("secondary");
    expect(await primary.hold("primary", 1, 150)).to.deep.include({ granted: true, epoch: 1, leaseMs: 150 });
    const refused = await secondary.claim("secondary", 2);
    expect(refused).to.deep.include({ granted: false, epoch: 1, holder: "primary" });
    expect(refused).to.have.property("retryInMs").that.is.within(1, 150);
    await new Promise((resolve) => setTimeout(resolve, (refused as { retryInMs: number }).retryInMs + 5));
    expect(await secondary.claim("secondary", 2)).to.deep.include({ granted: true, epoch: 2 });
    expect(await primary.hold("primary", 1, 150)).to.deep.include({ granted: false, epoch: 2 });
  });

  it("a holder whose connection closes (a crashed node) loses its hold at once", async () => {
    const primary = node("primary");
    const secondary = node("secondary");
    expect(await primary.hold("primary", 1, 300)).to.deep.include({ granted: true });
    expect(await secondary.claim("secondary", 2)).to.have.property("retryInMs");
    primary.close();
    const deadline = performance.now() + 2000;
    let answer = await secondary.claim("secondary", 2);
    while (!answer.granted && performance.now() < deadline) answer = await secondary.claim("secondary", 2);
    expect(answer).to.deep.include({ granted: true, epoch: 2 });
  });

  it("a node with the wrong secret gets no answer (the question fails; it must not run the guest)", async () => {
    const impostor = node("secondary", new TextEncoder().encode("not-the-pair-secret-0123456789"));
    const error = await impostor.claim("secondary", 2).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(error?.message).to.match(/auth|refused|secret|closed/i);
    expect(server.core.epoch).to.equal(0);
  });

  it("a witness that is gone makes questions fail within the bound, and asks again on a new connection once it is back", async () => {
    const primary = node("primary");
    expect((await primary.renew("primary", 1)).granted).to.equal(true);
    await server.close();
    const started = performance.now();
    const error = await primary.renew("primary", 1).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(error, "no answer from a closed witness").to.be.instanceOf(Error);
    expect(performance.now() - started).to.be.below(2500);
    server = await startWitness({ secret: SECRET, leaseMs: 300 });
    const again = new LinkWitness({ url: server.url, secret: SECRET, nodeId: "primary", dial, timeoutMs: 2000 });
    clients.push(again);
    expect((await again.renew("primary", 1)).granted).to.equal(true);
  });
});
