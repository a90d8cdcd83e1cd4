// Node adapter: images read from files, and the default guest shipped in images/.
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import type { ImageSource, MachineConfig } from "../config.ts";
import { trackedV86Wasm, v86WasmPath } from "./tracked-wasm.ts";

/** An image read from a file when the machine boots; a missing file names its path. */
export function fileImage(path: string): ImageSource {
  return {
    location: path,
    async load() {
      try {
        return new Uint8Array(await readFile(path));
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        throw new Error(FILE_ERRORS[code ?? ""] ?? (error as Error).message, { cause: error });
      }
    },
  };
}

const FILE_ERRORS: Record<string, string> = {
  ENOENT: "no such file",
  EISDIR: "is a directory, expected a file",
  EACCES: "permission denied",
  ENOTDIR: "a parent of this path is not a directory",
};

/** The folder of the default guest (BIOS, kernel, initramfs) in this checkout. */
export const DEFAULT_IMAGES_DIR = fileURLToPath(new URL("../../images/", import.meta.url));

export { v86WasmPath };

/** Image sources of the default guest; override any field to change it. */
export function defaultGuest(imagesDir: string = DEFAULT_IMAGES_DIR): Pick<MachineConfig, "wasm" | "bios" | "kernel" | "initrd"> {
  const dir = imagesDir.endsWith("/") ? imagesDir : imagesDir + "/";
  return {
    wasm: trackedV86Wasm(),
    bios: fileImage(dir + "bios.bin"),
    kernel: fileImage(dir + "vmlinuz"),
    initrd: fileImage(dir + "initramfs.cpio.gz"),
  };
}
