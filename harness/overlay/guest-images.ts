// The guest's image sources for a node: the default guest (or --images DIR), with an
// overlay archive appended to its initramfs when one is given. Both nodes of a pair
// get the same, so a secondary's machine is configured like its primary's.
import type { ImageSource, MachineConfig } from "../../emulator/config.ts";
import { defaultGuest, fileImage } from "../../emulator/node/images.ts";

/** Two images as one: `base`, zero bytes up to a multiple of 4 (where Linux looks for the next archive), then `extra`. */
export function concatenatedInitrd(base: ImageSource, extra: ImageSource): ImageSource {
  return {
    location: `${base.location} + ${extra.location}`,
    async load() {
      const [first, second] = await Promise.all([base.load(), extra.load()]);
      const start = first.length + ((4 - (first.length % 4)) % 4);
      const joined = new Uint8Array(start + second.length);
      joined.set(first);
      joined.set(second, start);
      return joined;
    },
  };
}

export function guestImages(imagesDir: string | undefined, overlayArchive: string | undefined): Pick<MachineConfig, "wasm" | "bios" | "kernel" | "initrd"> {
  const guest = defaultGuest(imagesDir);
  return overlayArchive === undefined ? guest : { ...guest, initrd: concatenatedInitrd(guest.initrd, fileImage(overlayArchive)) };
}
