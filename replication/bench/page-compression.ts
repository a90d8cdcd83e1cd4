// Measures memory-frame size and encode/decode time with and without deflate on
// synthetic guest page mixes. Run: npx tsx replication/bench/page-compression.ts
// The numbers in PROTOCOL.md come from this script.
import { decodeFrame, encodeFrame } from "../protocol/frames.ts";
import { collectPages } from "../protocol/page-collect.ts";
import { PAGE_SIZE } from "../protocol/limits.ts";
import { seededRandom } from "../test/fixtures.ts";

type PageKind = "zero" | "text" | "code" | "random";
const MIXES: Record<string, Partial<Record<PageKind, number>>> = {
  "idle guest (40% zero, 30% text, 20% code, 10% random)": { zero: 0.4, text: 0.3, code: 0.2, random: 0.1 },
  "file writes (10% zero, 60% text, 30% random)": { zero: 0.1, text: 0.6, random: 0.3 },
  "incompressible (5% zero, 95% random)": { zero: 0.05, random: 0.95 },
};
const WORDS = "the of and to in is that for it as with was on be by this kernel page buffer inode write sector block ext4 journal commit".split(" ");

function fillPage(page: Uint8Array, kind: PageKind, random: () => number): void {
  if (kind === "zero") return;
  if (kind === "random") for (let i = 0; i < PAGE_SIZE; i++) page[i] = Math.floor(random() * 256);
  if (kind === "code") for (let i = 0; i < PAGE_SIZE; i++) page[i] = random() < 0.5 ? [0x00, 0x48, 0x89, 0x8b, 0xe8, 0xc3, 0xff][Math.floor(random() * 7)]! : Math.floor(random() * 256);
  if (kind === "text") {
    let text = "";
    while (text.length < PAGE_SIZE) text += WORDS[Math.floor(random() * WORDS.length)] + (random() < 0.1 ? `: ${Math.floor(random() * 1e6)}\n` : " ");
    page.set(new TextEncoder().encode(text.slice(0, PAGE_SIZE)));
  }
}

function guestMemory(pages: number, mix: Partial<Record<PageKind, number>>, random: () => number): Uint8Array {
  const memory = new Uint8Array(pages * PAGE_SIZE);
  for (let p = 0; p < pages; p++) {
    let roll = random();
    let kind: PageKind = "zero";
    for (const [candidate, share] of Object.entries(mix) as Array<[PageKind, number]>) {
      if ((roll -= share) < 0) {
        kind = candidate;
        break;
      }
    }
    fillPage(memory.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE), kind, random);
  }
  return memory;
}

async function timed<T>(work: () => Promise<T>, runs: number): Promise<{ result: T; ms: number }> {
  let result = await work(); // warm-up
  const started = performance.now();
  for (let i = 0; i < runs; i++) result = await work();
  return { result, ms: (performance.now() - started) / runs };
}

const rows: string[] = ["| mix | dirty pages | raw | zero-elided | zero-elided + deflate | encode ms (plain / deflate) | decode ms (plain / deflate) |", "|---|---|---|---|---|---|---|"];
for (const [name, mix] of Object.entries(MIXES)) {
  for (const pages of [64, 1000, 4000]) {
    const memory = guestMemory(pages, mix, seededRandom(42));
    const [frame] = collectPages(memory, Array.from({ length: pages }, (_, i) => i), 1, 1);
    const runs = pages > 1000 ? 5 : 20;
    const plain = await timed(() => encodeFrame(frame!), runs);
    const packed = await timed(() => encodeFrame(frame!, { compress: true }), runs);
    const plainDecode = await timed(() => decodeFrame(plain.result), runs);
    const packedDecode = await timed(() => decodeFrame(packed.result), runs);
    const kib = (bytes: number): string => `${(bytes / 1024).toFixed(0)} KiB`;
    rows.push(
      `| ${name} | ${pages} | ${kib(pages * PAGE_SIZE)} | ${kib(plain.result.length)} | ${kib(packed.result.length)} | ${plain.ms.toFixed(2)} / ${packed.ms.toFixed(2)} | ${plainDecode.ms.toFixed(2)} / ${packedDecode.ms.toFixed(2)} |`,
    );
  }
}
console.log(rows.join("\n"));
