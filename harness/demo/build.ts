// `npm run build:web`: bundles the demo page and its node worker from the project's
// own TypeScript modules with esbuild, and lays out everything the page loads (no
// CDN: it works offline): styles, the v86 wasm, the guest images and the snapshot.
import { copyFile, mkdir, readFile, stat } from "node:fs/promises";
import { createRequire } from "node:module";
import { basename, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { build } from "esbuild";
import { DEFAULT_IMAGES_DIR } from "../../emulator/node/images.ts";
import { trackedV86WasmFile } from "../../emulator/node/tracked-wasm.ts";
import { ensureGuestSnapshot } from "./guest-snapshot.ts";
import { GUEST_FILES } from "./web/demo-guest.ts";

const WEB = fileURLToPath(new URL("./web/", import.meta.url));
export const DEFAULT_OUT_DIR = fileURLToPath(new URL("./dist/", import.meta.url));
const require = createRequire(import.meta.url);
const NODE_BUILTIN_STUB = join(WEB, "stubs/node-builtins.ts");

/**
 * The v86 wasm the page runs (and the snapshot is made with): the same patched build as in
 * Node (dirty-page tracking by the CPU, emulator/wasm-patch/), made and cached here.
 */
export function demoWasmPath(): Promise<string> {
  return trackedV86WasmFile();
}

export interface BuiltFile {
  path: string;
  bytes: number;
  gzipBytes: number;
}

export interface DemoBuild {
  outDir: string;
  /** The bundles and styles, with their gzip sizes (what a browser downloads besides wasm and guest). */
  code: BuiltFile[];
  snapshotBuilt: boolean;
}

export async function buildDemo(options: { outDir?: string; log?: (line: string) => void } = {}): Promise<DemoBuild> {
  const outDir = options.outDir ?? DEFAULT_OUT_DIR;
  const log = options.log ?? (() => undefined);
  await mkdir(join(outDir, "guest"), { recursive: true });
  await build({
    entryPoints: [join(WEB, "page.ts"), join(WEB, "node-worker.ts")],
    outdir: outDir,
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    minify: true,
    sourcemap: "linked",
    legalComments: "linked",
    logLevel: "warning",
    // v86 requires these only where the browser lacks the feature: never in a page that passed checkCapabilities.
    alias: Object.fromEntries(["fs", "crypto", "perf_hooks", "node:fs/promises", "node:crypto"].map((name) => [name, NODE_BUILTIN_STUB])),
  });
  const statics: [string, string][] = [
    [join(WEB, "index.html"), "index.html"],
    [join(WEB, "style.css"), "style.css"],
    [require.resolve("@xterm/xterm/css/xterm.css"), "xterm.css"],
    [require.resolve("uplot/dist/uPlot.min.css"), "uPlot.min.css"],
    [await demoWasmPath(), GUEST_FILES.wasm],
    [join(DEFAULT_IMAGES_DIR, "bios.bin"), GUEST_FILES.bios],
    [join(DEFAULT_IMAGES_DIR, "vmlinuz"), GUEST_FILES.kernel],
    [join(DEFAULT_IMAGES_DIR, "initramfs.cpio.gz"), GUEST_FILES.initrd],
  ];
  await Promise.all(statics.map(([from, to]) => copyFile(from, join(outDir, to))));
  const snapshot = await ensureGuestSnapshot(join(outDir, "guest"), await demoWasmPath(), log);
  if (basename(snapshot.snapshot) !== basename(GUEST_FILES.snapshot) || basename(snapshot.disk) !== basename(GUEST_FILES.disk)) {
    throw new Error("build: the snapshot files are not where the page looks for them");
  }
  const code = await Promise.all(["page.js", "node-worker.js", "style.css", "xterm.css", "uPlot.min.css"].map((name) => sizeOf(outDir, name)));
  return { outDir, code, snapshotBuilt: snapshot.built };
}

async function sizeOf(dir: string, name: string): Promise<BuiltFile> {
  const path = join(dir, name);
  const bytes = await readFile(path);
  return { path, bytes: (await stat(path)).size, gzipBytes: gzipSync(bytes).length };
}

/** `tsx harness/demo/build.ts [OUT_DIR]` */
if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const started = performance.now();
  buildDemo({ outDir: process.argv[2], log: (line) => process.stderr.write(`build:web: ${line}\n`) }).then(
    (result) => {
      for (const file of result.code)
        process.stderr.write(
          `build:web: ${basename(file.path).padEnd(16)} ${(file.bytes / 1024).toFixed(0).padStart(6)} KiB, ${(file.gzipBytes / 1024).toFixed(0).padStart(5)} KiB gzipped\n`,
        );
      process.stderr.write(`build:web: ${result.outDir} in ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
    },
    (error: unknown) => {
      process.stderr.write(`build:web: ${(error as Error).message}\n`);
      process.exit(1);
    },
  );
}
