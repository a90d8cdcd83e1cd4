// The package build (`npm run build`; `npm pack` runs it through prepack): compiles
// the sources to ESM JavaScript and .d.ts in dist/ (tsconfig.build.json), copies the
// files the code needs at run time that are not TypeScript (RUNTIME_ASSETS) to the
// same relative paths in dist/, and checks that every file the compiled code locates
// with `new URL("<relative path>", import.meta.url)` is there.
import { execFileSync } from "node:child_process";
import { chmodSync, cpSync, existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const DIST = join(ROOT, "dist");

/**
 * Non-TypeScript files read at run time, relative to the repository root; each is
 * copied to dist/ at the same relative path. Add a file here when code starts to
 * read one (the check below fails the build for any `new URL(...)` target that is
 * missing). Dependencies' files (v86's wasm) come from node_modules, not from here.
 */
export const RUNTIME_ASSETS = ["images/bios.bin", "images/vmlinuz", "images/initramfs.cpio.gz", "images/manifest.json", "images/README.md", "images/licenses"];

/** The compiled executables (package.json `bin`). */
const EXECUTABLES = ["harness/twinvm.js"];

function filesEndingWith(dir: string, suffix: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return filesEndingWith(path, suffix);
    return entry.name.endsWith(suffix) ? [path] : [];
  });
}

const compiledFiles = (dir: string) => filesEndingWith(dir, ".js");

/**
 * tsc rewrites `.ts` specifiers in the JavaScript it emits but keeps them in .d.ts
 * files; TypeScript before 5.0 (and other tools) cannot resolve those, so point them
 * at the .js files the declarations sit beside.
 */
function rewriteDeclarationSpecifiers(): void {
  for (const file of filesEndingWith(DIST, ".d.ts")) {
    const text = readFileSync(file, "utf8");
    const rewritten = text.replace(/((?:from|import)\s*\(?\s*)(["'])(\.{1,2}\/[^"']*)\.ts\2/g, "$1$2$3.js$2");
    if (rewritten !== text) writeFileSync(file, rewritten);
  }
}

/** Targets of `new URL("./x", import.meta.url)` (a literal relative path) that do not exist in dist/. */
function missingUrlTargets(): string[] {
  const missing: string[] = [];
  for (const file of compiledFiles(DIST)) {
    for (const match of readFileSync(file, "utf8").matchAll(/new URL\(\s*"(\.{1,2}\/[^"]*)"\s*,\s*import\.meta\.url\s*\)/g)) {
      const target = join(dirname(file), match[1]!);
      // A .ts target is the from-source twin of a .js one (see harness/node-process.ts).
      if (target.endsWith(".ts") || existsSync(target)) continue;
      missing.push(`${relative(DIST, file)}: ${match[1]} -> ${relative(ROOT, target)}`);
    }
  }
  return missing;
}

function build(): void {
  const started = performance.now();
  rmSync(DIST, { recursive: true, force: true });
  execFileSync(process.execPath, [join(ROOT, "node_modules/typescript-native/bin/tsc"), "-p", join(ROOT, "tsconfig.build.json")], {
    stdio: "inherit",
    cwd: ROOT,
  });
  rewriteDeclarationSpecifiers();
  for (const asset of RUNTIME_ASSETS) {
    const source = join(ROOT, asset);
    if (!existsSync(source)) throw new Error(`runtime asset ${asset} is missing from the checkout`);
    cpSync(source, join(DIST, asset), { recursive: statSync(source).isDirectory() });
  }
  for (const executable of EXECUTABLES) chmodSync(join(DIST, executable), 0o755);
  const missing = missingUrlTargets();
  if (missing.length > 0)
    throw new Error(`compiled code refers to files that are not in dist/ (add them to RUNTIME_ASSETS in scripts/build.ts):\n  ${missing.join("\n  ")}`);
  process.stderr.write(`build: dist/ written in ${((performance.now() - started) / 1000).toFixed(1)} s (${compiledFiles(DIST).length} modules)\n`);
}

try {
  build();
} catch (error) {
  process.stderr.write(`build: ${(error as Error).message}\n`);
  process.exit(1);
}
