// The start shared by our binary state formats: 8 ASCII magic bytes, then a u32 format
// version, so that a reader refuses foreign or newer bytes with a clear reason.

export interface Tag {
  magic: string;
  version: number;
  /** Bytes of the whole fixed header, for the length check. */
  headerBytes: number;
  /** Names the format in errors, e.g. "state delta". */
  what: string;
}

export function writeTag(out: Uint8Array, tag: Tag): DataView {
  out.set(new TextEncoder().encode(tag.magic), 0);
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  view.setUint32(8, tag.version, true);
  return view;
}

/** Checks magic and version; returns a view for the rest of the header, or throws `makeError(message)`. */
export function readTag(bytes: Uint8Array, tag: Tag, makeError: (message: string) => Error): DataView {
  if (bytes.length < tag.headerBytes || new TextDecoder().decode(bytes.subarray(0, 8)) !== tag.magic) {
    throw makeError(`${tag.what}: not a twinvm ${tag.what} (bad magic)`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint32(8, true);
  if (version !== tag.version) throw makeError(`${tag.what}: format version ${version}, this build reads ${tag.version}`);
  return view;
}
