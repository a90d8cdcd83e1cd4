// What the dirty-map patch adds to v86's module, as the code that uses it sees it. Kept
// apart from the patcher so that using a patched module never loads binaryen.

/** Bumped when the patch changes, so cached outputs of an older patch are not reused. */
export const DIRTY_MAP_PATCH_VERSION = 5;

/** Exported by the patched module: `(map, ramPageBias, pageCount) -> void`; pageCount 0 switches marking off. */
export const TRACK_EXPORT = "_twinvm_track";
/**
 * Exported by the patched module: `(on) -> void`; while on, `main_loop` returns after its
 * current chunk of guest instructions instead of running on until its time slice is used up.
 */
export const YIELD_EXPORT = "_twinvm_yield";
/**
 * Exported by the patched module: `(instructions) -> void` sets how many guest instructions
 * `main_loop` runs between two looks at timers, interrupts and the yield flag (v86: 100003).
 */
export const CHUNK_EXPORT = "_twinvm_chunk";
/** v86's own chunk length (`LOOP_COUNTER` in its cpu.rs), the patched module's default. */
export const V86_CHUNK_INSTRUCTIONS = 100_003;
/**
 * Exported by the patched module: `() -> void` makes every entry of v86's TLB read-only (and
 * drops none), so the next write to each page walks the page tables, and marks it, while reads
 * keep their translations. The tracker's re-arm after each collection: a full TLB clear made the
 * guest walk the page tables again for every page it touched afterwards, reads and code included.
 */
export const WRITE_PROTECT_EXPORT = "_twinvm_write_protect_tlb";
/** Exported by the patched module: `() -> i32`, how many entries v86's list of valid TLB entries holds (tests, diagnostics). */
export const TLB_ENTRIES_EXPORT = "_twinvm_tlb_entries";
/** Exported by the patched module: returns DIRTY_MAP_PATCH_VERSION, to recognise a patched build. */
export const VERSION_EXPORT = "_twinvm_patch_version";
