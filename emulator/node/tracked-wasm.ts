// Node adapter: v86.wasm with the dirty-page map patch (emulator/wasm-patch/), made once per
// input and kept in a cache folder keyed by the input's sha256 and the patch version, so a
// boot pays the ~2 s patch only the first time on a machine. Writes are atomic (temp file
// and rename), so concurrent first boots cannot read half a file.
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import type { ImageSource } from "../config.ts";
import { DIRTY_MAP_PATCH_VERSION } from "../wasm-patch/dirty-map-abi.ts";

/** The pinned v86 build's own (unpatched) module. */
export function v86WasmPath(): string {
  return createRequire(import.meta.url).resolve("v86/build/v86.wasm");
}

/** `TWINVM_CACHE_DIR`, else node_modules/.cache/twinvm beside v86, else the temp folder. */
export function wasmCacheDir(): string {
  const fromEnv = process.env["TWINVM_CACHE_DIR"];
  if (fromEnv !== undefined && fromEnv !== "") return fromEnv;
  // .../node_modules/v86/build/v86.wasm -> .../node_modules/.cache/twinvm
  const nodeModules = dirname(dirname(dirname(v86WasmPath())));
  return join(nodeModules, ".cache", "twinvm");
}

/** File name of the patched module for an input digest. */
export function trackedWasmFileName(inputSha256: string): string {
  return `v86-dirty-map-v${DIRTY_MAP_PATCH_VERSION}-${inputSha256}.wasm`;
}

/** The patched bytes for `input`, from the cache or made now (and cached). binaryen loads only to patch. */
export async function trackedWasmBytes(input: Uint8Array, cacheDir = wasmCacheDir()): Promise<Uint8Array<ArrayBuffer>> {
  return (await trackedWasm(input, cacheDir)).bytes;
}

/** The patched module for `input` and the cache file that holds it (undefined when no folder could be written). */
export async function trackedWasm(input: Uint8Array, cacheDir = wasmCacheDir()): Promise<{ bytes: Uint8Array<ArrayBuffer>; path: string | undefined }> {
  const digest = createHash("sha256").update(input).digest("hex");
  // A read-only install cannot cache beside v86: the temp folder is the second choice.
  const dirs = [cacheDir, join(tmpdir(), `twinvm-cache-${process.getuid?.() ?? "user"}`)];
  for (const dir of dirs) {
    try {
      const path = join(dir, trackedWasmFileName(digest));
      const cached = new Uint8Array(readFileSync(path));
      if (WebAssembly.validate(cached)) return { bytes: cached, path };
    } catch {
      // not cached there
    }
  }
  const { patchDirtyMap } = await import("../wasm-patch/dirty-map-patch.ts");
  const patched = new Uint8Array(patchDirtyMap(input));
  for (const dir of dirs) {
    try {
      mkdirSync(dir, { recursive: true });
      const target = join(dir, trackedWasmFileName(digest));
      const temp = `${target}.${process.pid}.tmp`;
      writeFileSync(temp, patched);
      renameSync(temp, target);
      return { bytes: patched, path: target };
    } catch {
      // a read-only install: try the next folder; without a cache the next boot patches again
    }
  }
  return { bytes: patched, path: undefined };
}

/** The path of the patched pinned v86.wasm (made and cached first if needed): for a bundle that ships it. */
export async function trackedV86WasmFile(): Promise<string> {
  const { path } = await trackedWasm(new Uint8Array(readFileSync(v86WasmPath())));
  if (path === undefined) throw new Error(`cannot cache the patched v86.wasm (tried ${wasmCacheDir()} and the temp folder)`);
  return path;
}

/** The pinned v86.wasm, patched: the default `wasm` image of every machine. */
export function trackedV86Wasm(): ImageSource {
  const path = v86WasmPath();
  return {
    location: `${path} (dirty-page map patch v${DIRTY_MAP_PATCH_VERSION})`,
    async load() {
      return trackedWasmBytes(new Uint8Array(readFileSync(path)));
    },
  };
}
