// Configuration and image mistakes fail early and name what is wrong.
import { expect } from "chai";
import { Machine } from "../machine.ts";
import { DEFAULT_IMAGES_DIR, defaultGuest, fileImage } from "../node/images.ts";
import { BootTimeoutError, ConfigError, ImageError } from "../errors.ts";
import { DEFAULT_CMDLINE } from "../config.ts";

async function bootError(machine: Machine): Promise<Error> {
  const error = await machine.boot().then(
    () => undefined,
    (e: unknown) => e as Error,
  );
  expect(error, "boot should have failed").to.be.instanceOf(Error);
  expect(machine.state).to.equal("destroyed");
  return error!;
}

describe("Machine errors", () => {
  it("names a missing image and its path", async () => {
    const error = await bootError(new Machine({ ...defaultGuest(), kernel: fileImage("/no/such/vmlinuz") }));
    expect(error).to.be.instanceOf(ImageError);
    expect(error.message).to.equal("kernel image /no/such/vmlinuz: no such file");
  });

  it("names an image that is the wrong kind of file", async () => {
    const error = await bootError(new Machine({ ...defaultGuest(), kernel: fileImage(DEFAULT_IMAGES_DIR + "bios.bin") }));
    expect(error).to.be.instanceOf(ImageError);
    expect(error.message).to.match(/^kernel image .*bios\.bin: not a Linux bzImage/);
    const dir = await bootError(new Machine({ ...defaultGuest(), initrd: fileImage(DEFAULT_IMAGES_DIR) }));
    expect(dir.message).to.match(/^initrd image .*: is a directory/);
  });

  it("refuses bad config values at construction", () => {
    expect(() => new Machine({ ...defaultGuest(), memoryMiB: 8 })).to.throw(
      ConfigError,
      /memoryMiB: expected a whole number of MiB from 32 to 2048, got number 8/,
    );
    expect(() => new Machine({ ...defaultGuest(), memoryMiB: 100.5 })).to.throw(ConfigError, /memoryMiB/);
    expect(() => new Machine({ ...defaultGuest(), vgaMemoryKiB: 100 })).to.throw(ConfigError, /vgaMemoryKiB/);
    expect(() => new Machine({ ...defaultGuest(), bootTimeoutMs: -1 })).to.throw(ConfigError, /bootTimeoutMs/);
    expect(() => new Machine({ ...defaultGuest(), readyMarker: "" })).to.throw(ConfigError, /readyMarker/);
    expect(() => new Machine({ ...defaultGuest(), bios: "bios.bin" as never })).to.throw(ConfigError, /config\.bios: expected an image source/);
  });

  it("reports a guest that never gets ready, with the console's last lines", async () => {
    // Without `quiet` the kernel prints timestamped lines at once; the marker below never comes.
    const machine = new Machine({
      ...defaultGuest(),
      cmdline: DEFAULT_CMDLINE.replace("quiet", ""),
      readyMarker: "A-MARKER-THE-GUEST-NEVER-PRINTS",
      bootTimeoutMs: 12_000,
    });
    const error = await bootError(machine);
    expect(error).to.be.instanceOf(BootTimeoutError);
    expect(error.message).to.match(/timed out after 12000 ms waiting for the ready marker "A-MARKER-THE-GUEST-NEVER-PRINTS"/);
    expect((error as BootTimeoutError).consoleTail).to.match(/^\[ *\d+\.\d+\] .+\n\[ *\d+\.\d+\] /m);
  });
});
