// What the dirty-map patch adds to v86's module, as the code that uses it sees it. Kept
// apart from the patcher so that using a patched module never loads binaryen.

/** Bumped when the patch changes, so cached outputs of an older patch are not reused. */
export const DIRTY_MAP_PATCH_VERSION = 1;

/** Exported by the patched module: `(map, ramPageBias, pageCount) -> void`; pageCount 0 switches marking off. */
export const TRACK_EXPORT = "_twinvm_track";
/** Exported by the patched module: returns DIRTY_MAP_PATCH_VERSION, to recognise a patched build. */
export const VERSION_EXPORT = "_twinvm_patch_version";
