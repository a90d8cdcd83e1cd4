// Rewrites v86's WebAssembly module so that the CPU itself records which 4 KiB pages of
// guest RAM may have been written: a byte per page in a map we allocate, set
//  - on the first write to a page through the TLB: a write (interpreter, string
//    instructions and JIT code alike) through an entry that is missing or read-only walks
//    the page tables with for_writing set, in `do_page_walk`. After each collection the
//    tracker makes every TLB entry read-only (WRITE_PROTECT_EXPORT, a loop over v86's list
//    of valid entries), so each page's next write walks again while reads keep their entries;
//  - on every physical write (page-table A/D bits, device DMA through `write_blob` and
//    `jit_dirty_cache`, our virtio device): they all invalidate JIT code through
//    `jit_dirty_page_ctx`.
// So one collection costs O(pages written) instead of a scan of all RAM. It also lets the
// host end `main_loop`'s slice early: the loop's "time slice used up?" test also looks at a
// flag the host sets (YIELD_EXPORT), so the event loop (a peer's answer the guest waits for)
// runs after the current chunk of at most ~100k instructions, not a millisecond or more later.
// The chunk's length, a constant in v86, becomes a global the host may lower meanwhile.
// The patch is
// applied to the exact pinned build (see V86_VERSION): every function it touches is
// checked by name and signature first, and anything unexpected refuses loudly.
/* eslint-disable @typescript-eslint/no-unsafe-enum-comparison -- binaryen.js types its expression ids and operators as enums but returns plain numbers from getExpressionId and getExpressionInfo */
import binaryen from "binaryen";
import {
  CHUNK_EXPORT,
  DIRTY_MAP_PATCH_VERSION,
  TRACK_EXPORT,
  V86_CHUNK_INSTRUCTIONS,
  TLB_ENTRIES_EXPORT,
  VERSION_EXPORT,
  WRITE_PROTECT_EXPORT,
  YIELD_EXPORT,
} from "./dirty-map-abi.ts";

/** binaryen.js has `Function.getBody/setBody` on the namespace; its typings misplace them on Module. */
const FunctionBodies = (
  binaryen as unknown as {
    Function: { getBody(func: binaryen.FunctionRef): binaryen.ExpressionRef; setBody(func: binaryen.FunctionRef, body: binaryen.ExpressionRef): void };
  }
).Function;

/** Likewise `Binary.setRight`. */
const Binaries = (binaryen as unknown as { Binary: { setRight(expression: binaryen.ExpressionRef, right: binaryen.ExpressionRef): void } }).Binary;

/** Likewise `Break.getCondition/setCondition`. */
const Breaks = (
  binaryen as unknown as {
    Break: {
      getCondition(expression: binaryen.ExpressionRef): binaryen.ExpressionRef;
      setCondition(expression: binaryen.ExpressionRef, condition: binaryen.ExpressionRef): void;
    };
  }
).Break;

export class WasmPatchError extends Error {
  override name = "WasmPatchError";
}

interface FunctionShape {
  /** The Rust symbol's mangled-name suffix (the crate hash before it varies by build). */
  suffix: string;
  params: number[];
  results: number;
}

const DO_PAGE_WALK: FunctionShape = {
  // cpu::cpu::do_page_walk(addr: i32, for_writing, user, jit, side_effects) -> OrPageFault<NonZeroI32> (0 = fault)
  suffix: "3cpu3cpu12do_page_walk",
  params: [binaryen.i32, binaryen.i32, binaryen.i32, binaryen.i32, binaryen.i32],
  results: binaryen.i32,
};
const JIT_DIRTY_PAGE_CTX: FunctionShape = {
  // jit::jit_dirty_page_ctx(ctx: &mut JitState, page: Page)
  suffix: "3jit18jit_dirty_page_ctx",
  params: [binaryen.i32, binaryen.i32],
  results: binaryen.none,
};
const FULL_CLEAR_TLB: FunctionShape = {
  // cpu::cpu::full_clear_tlb() (exported unmangled)
  suffix: "full_clear_tlb",
  params: [],
  results: binaryen.none,
};
const MAIN_LOOP: FunctionShape = {
  // cpu::cpu::main_loop() -> f64 (exported unmangled)
  suffix: "main_loop",
  params: [],
  results: binaryen.f64,
};
/** Exports the tracker calls on the patched module; present in the pinned build. */
export const REQUIRED_EXPORTS = ["full_clear_tlb", "jit_dirty_cache", "write8", "write16", "write32", "v86_malloc", "memory"] as const;

/**
 * Returns the patched module. Deterministic: the same input gives the same bytes.
 * Throws WasmPatchError naming what differs when the input is not the build it was written for.
 */
export function patchDirtyMap(input: Uint8Array): Uint8Array {
  // binaryen's default features are those v86 is built with (all of them would emit encodings engines reject).
  const module = binaryen.readBinary(input);
  try {
    checkExports(module);
    const pageWalk = findFunction(module, DO_PAGE_WALK);
    const dirtyPage = findFunction(module, JIT_DIRTY_PAGE_CTX);
    const mainLoop = findFunction(module, MAIN_LOOP, (name) => name === "main_loop");
    for (const name of ["twinvm$map", "twinvm$bias", "twinvm$pages", "twinvm$yield"]) {
      module.addGlobal(name, binaryen.i32, true, module.i32.const(0));
    }
    module.addGlobal("twinvm$chunk", binaryen.i32, true, module.i32.const(V86_CHUNK_INSTRUCTIONS));
    addControlExports(module);
    addWriteProtect(module, tlbLayout(module));
    wrapPageWalk(module, pageWalk);
    prependMark(module, dirtyPage);
    yieldOnRequest(module, mainLoop);
    if (!module.validate()) throw new WasmPatchError("the patched v86 module does not validate");
    return module.emitBinary();
  } finally {
    module.dispose();
  }
}

function checkExports(module: binaryen.Module): void {
  const names = new Set<string>();
  for (let i = 0; i < module.getNumExports(); i++) names.add(binaryen.getExportInfo(module.getExportByIndex(i)).name);
  if (names.has(TRACK_EXPORT)) throw new WasmPatchError("this v86 module is already patched");
  const missing = REQUIRED_EXPORTS.filter((name) => !names.has(name));
  if (missing.length > 0) throw new WasmPatchError(`v86 module lacks the exports ${missing.join(", ")}: not the pinned v86 build`);
}

function findFunction(module: binaryen.Module, shape: FunctionShape, matchName = (name: string) => name.endsWith(shape.suffix)): string {
  const matches: string[] = [];
  for (let i = 0; i < module.getNumFunctions(); i++) {
    const info = binaryen.getFunctionInfo(module.getFunctionByIndex(i));
    if (matchName(info.name)) matches.push(info.name);
  }
  if (matches.length !== 1) {
    throw new WasmPatchError(`v86 module has ${matches.length} functions named *${shape.suffix} (expected exactly one): not the pinned v86 build`);
  }
  const name = matches[0]!;
  const info = binaryen.getFunctionInfo(module.getFunction(name));
  const params = binaryen.expandType(info.params);
  if (info.module !== "" || params.length !== shape.params.length || params.some((type, i) => type !== shape.params[i]) || info.results !== shape.results) {
    throw new WasmPatchError(`v86 function ${name} has an unexpected signature (${params.length} params): not the pinned v86 build`);
  }
  return name;
}

/** `_twinvm_track(map, bias, pages)` sets the three globals; `_twinvm_patch_version()` names the patch. */
function addControlExports(module: binaryen.Module): void {
  const i32 = binaryen.i32;
  module.addFunction(
    TRACK_EXPORT,
    binaryen.createType([i32, i32, i32]),
    binaryen.none,
    [],
    module.block(null, [
      module.global.set("twinvm$map", module.local.get(0, i32)),
      module.global.set("twinvm$bias", module.local.get(1, i32)),
      module.global.set("twinvm$pages", module.local.get(2, i32)),
    ]),
  );
  module.addFunctionExport(TRACK_EXPORT, TRACK_EXPORT);
  module.addFunction(YIELD_EXPORT, binaryen.createType([i32]), binaryen.none, [], module.global.set("twinvm$yield", module.local.get(0, i32)));
  module.addFunctionExport(YIELD_EXPORT, YIELD_EXPORT);
  module.addFunction(CHUNK_EXPORT, binaryen.createType([i32]), binaryen.none, [], module.global.set("twinvm$chunk", module.local.get(0, i32)));
  module.addFunctionExport(CHUNK_EXPORT, CHUNK_EXPORT);
  module.addFunction(VERSION_EXPORT, binaryen.none, i32, [], module.i32.const(DIRTY_MAP_PATCH_VERSION));
  module.addFunctionExport(VERSION_EXPORT, VERSION_EXPORT);
}

/** Where v86 keeps its TLB in linear memory (byte addresses), read from `full_clear_tlb`. */
interface TlbLayout {
  /** `valid_tlb_entries_count: i32`. */
  count: number;
  /** `valid_tlb_entries: [i32; max]`: the virtual pages whose `tlb_data` entry may be set. */
  entries: number;
  max: number;
  /** `tlb_data: [i32; 0x100000]`: an entry per virtual page, 0 when not cached. */
  data: number;
}

/** v86's TLB entry flag that sends writes through a page walk (cpu.rs `TLB_READONLY`). */
const TLB_READONLY = 1 << 1;
const TLB_PAGES = 0x100000;

/**
 * `full_clear_tlb` is `for i in 0..valid_tlb_entries_count { clear_tlb_code(page);
 * tlb_data[page] = 0 } valid_tlb_entries_count = 0`, compiled here to: the count loaded from
 * `(i32.load offset=COUNT (i32.const 0))`; a counter set to `-4 * max` and counted up to 0
 * by 4, each page loaded from `(i32.load (i32.add counter (i32.const ENTRIES + 4 * max)))`;
 * and `(i32.store offset=DATA (page * 4) (i32.const 0))`. Each of the three is found exactly
 * once, and the arrays must lie where Rust laid them out (the entries right after the count).
 */
function tlbLayout(module: binaryen.Module): TlbLayout {
  const counts: number[] = [];
  const starts: number[] = [];
  const entryBases: number[] = [];
  const dataStores: number[] = [];
  const is = (ref: binaryen.ExpressionRef, id: number) => ref !== 0 && binaryen.getExpressionId(ref) === id;
  const constant = (ref: binaryen.ExpressionRef) => (binaryen.getExpressionInfo(ref) as binaryen.ConstInfo).value as number;
  const body = FunctionBodies.getBody(module.getFunction(findFunction(module, FULL_CLEAR_TLB, (name) => name === "full_clear_tlb")));
  visitExpressions(body, (expression) => {
    const id = binaryen.getExpressionId(expression);
    if (id === binaryen.LoadId) {
      const load = binaryen.getExpressionInfo(expression) as binaryen.LoadInfo;
      if (load.type !== binaryen.i32 || load.bytes !== 4) return;
      if (is(load.ptr, binaryen.ConstId) && constant(load.ptr) === 0 && load.offset > 0) counts.push(load.offset);
      if (load.offset === 0 && is(load.ptr, binaryen.BinaryId)) {
        const add = binaryen.getExpressionInfo(load.ptr) as binaryen.BinaryInfo;
        if (add.op === binaryen.AddInt32 && is(add.left, binaryen.LocalGetId) && is(add.right, binaryen.ConstId) && constant(add.right) > 0)
          entryBases.push(constant(add.right));
      }
    } else if (id === binaryen.StoreId) {
      const store = binaryen.getExpressionInfo(expression) as binaryen.StoreInfo;
      if (store.bytes === 4 && store.offset > 0 && is(store.ptr, binaryen.LocalGetId) && is(store.value, binaryen.ConstId) && constant(store.value) === 0)
        dataStores.push(store.offset);
    } else if (id === binaryen.LocalSetId) {
      const set = binaryen.getExpressionInfo(expression) as binaryen.LocalSetInfo;
      if (is(set.value, binaryen.ConstId) && constant(set.value) < 0) starts.push(constant(set.value));
    }
  });
  const one = (found: number[], what: string) => {
    if (found.length !== 1) throw new WasmPatchError(`v86 full_clear_tlb: found ${found.length} ${what} (expected exactly one): not the pinned v86 build`);
    return found[0]!;
  };
  const count = one(counts, "loads of the valid-entry count");
  const start = one(starts, "negative loop starts");
  const max = -start / 4;
  const entries = one(entryBases, "loads of a valid entry") + start;
  const data = one(dataStores, "clearing stores into tlb_data");
  if (!Number.isInteger(max) || max < 1 || entries !== count + 4 || data < entries + 4 * max)
    throw new WasmPatchError(
      `v86 full_clear_tlb: an unexpected TLB layout (count ${count}, entries ${entries} x ${max}, data ${data}): not the pinned v86 build`,
    );
  return { count, entries, max, data };
}

/**
 * `_twinvm_write_protect_tlb()`: `for i in 0..min(count, max) { page = entries[i]; if page <
 * 0x100000 && tlb_data[page] != 0 { tlb_data[page] |= TLB_READONLY } }`. No entry is dropped,
 * so the list of valid entries stays as it was.
 */
function addWriteProtect(module: binaryen.Module, tlb: TlbLayout): void {
  const i32 = binaryen.i32;
  const [offset, end, page, at, entry] = [0, 1, 2, 3, 4];
  const get = (local: number) => module.local.get(local, i32);
  const set = (local: number, value: binaryen.ExpressionRef) => module.local.set(local, value);
  const count = () => module.i32.load(0, 4, module.i32.const(tlb.count));
  const body = module.block(null, [
    set(end, module.i32.shl(module.select(module.i32.lt_u(count(), module.i32.const(tlb.max)), count(), module.i32.const(tlb.max)), module.i32.const(2))),
    set(offset, module.i32.const(0)),
    module.block("done", [
      module.loop(
        "next",
        module.block(null, [
          module.br("done", module.i32.ge_u(get(offset), get(end))),
          set(page, module.i32.load(0, 4, module.i32.add(get(offset), module.i32.const(tlb.entries)))),
          module.if(
            module.i32.lt_u(get(page), module.i32.const(TLB_PAGES)),
            module.block(null, [
              set(at, module.i32.add(module.i32.shl(get(page), module.i32.const(2)), module.i32.const(tlb.data))),
              set(entry, module.i32.load(0, 4, get(at))),
              module.if(get(entry), module.i32.store(0, 4, get(at), module.i32.or(get(entry), module.i32.const(TLB_READONLY)))),
            ]),
          ),
          set(offset, module.i32.add(get(offset), module.i32.const(4))),
          module.br("next"),
        ]),
      ),
    ]),
  ]);
  module.addFunction(WRITE_PROTECT_EXPORT, binaryen.none, binaryen.none, [i32, i32, i32, i32, i32], body);
  module.addFunctionExport(WRITE_PROTECT_EXPORT, WRITE_PROTECT_EXPORT);
  module.addFunction(TLB_ENTRIES_EXPORT, binaryen.none, i32, [], count());
  module.addFunctionExport(TLB_ENTRIES_EXPORT, TLB_ENTRIES_EXPORT);
}

/** `map[page] = 1` when `page` (an expression, evaluated twice) is below the page count. */
function markPage(module: binaryen.Module, page: () => binaryen.ExpressionRef): binaryen.ExpressionRef {
  const i32 = binaryen.i32;
  return module.if(
    module.i32.lt_u(page(), module.global.get("twinvm$pages", i32)),
    module.i32.store8(0, 1, module.i32.add(module.global.get("twinvm$map", i32), page()), module.i32.const(1)),
  );
}

/**
 * The walk's original body moves into a new inner function; the walk itself calls it and,
 * when a walk for writing with side effects succeeded, marks the physical page the new TLB
 * entry maps: entry = (phys + mem8) ^ (virtual page << 12) | flags, so
 * ((entry ^ addr) >>> 12) - (mem8 >>> 12) is the guest-physical page ("bias" = mem8 >>> 12).
 * The entry is kept in parameter 2 (`user`), which the inner call has already consumed.
 */
function wrapPageWalk(module: binaryen.Module, name: string): void {
  const i32 = binaryen.i32;
  const fn = module.getFunction(name);
  const info = binaryen.getFunctionInfo(fn);
  const inner = `${name}$twinvm_inner`;
  module.addFunction(inner, info.params, info.results, info.vars, FunctionBodies.getBody(fn));
  const param = (index: number) => module.local.get(index, i32);
  const page = () => module.i32.sub(module.i32.shr_u(module.i32.xor(param(2), param(0)), module.i32.const(12)), module.global.get("twinvm$bias", i32));
  FunctionBodies.setBody(
    fn,
    module.block(
      null,
      [
        module.local.set(2, module.call(inner, [0, 1, 2, 3, 4].map(param), i32)),
        module.if(module.i32.and(module.i32.ne(param(2), module.i32.const(0)), module.i32.and(param(1), param(4))), markPage(module, page)),
        module.return(param(2)),
      ],
      i32,
    ),
  );
}

/** Marks `page` (parameter 1) before the original body runs, whatever path it then takes. */
function prependMark(module: binaryen.Module, name: string): void {
  const fn = module.getFunction(name);
  const body = FunctionBodies.getBody(fn);
  FunctionBodies.setBody(fn, module.block(null, [markPage(module, () => module.local.get(1, binaryen.i32)), body], binaryen.none));
}

/**
 * main_loop runs chunks of guest instructions in a loop, `br_if`-ing back while its slice
 * lasts: `(br_if $loop (i32.eqz (f64.gt (f64.sub now start) (f64.const 1))))`. That one
 * condition gains `&& !twinvm$yield`, so a set flag ends the slice after the chunk, by the
 * same path a used-up slice takes (main_loop then returns 0: run again at once). The chunk
 * itself runs while `(i32.lt_u (i32.sub counter start) (i32.const 100003))`: that constant
 * becomes `twinvm$chunk`.
 */
function yieldOnRequest(module: binaryen.Module, name: string): void {
  const sliceTests: binaryen.ExpressionRef[] = [];
  const chunkTests: binaryen.ExpressionRef[] = [];
  visitExpressions(FunctionBodies.getBody(module.getFunction(name)), (expression) => {
    if (binaryen.getExpressionId(expression) !== binaryen.BreakId) return;
    const condition = Breaks.getCondition(expression);
    if (condition === 0) return;
    if (isSliceLastsTest(condition)) sliceTests.push(expression);
    if (isChunkLastsTest(condition)) chunkTests.push(condition);
  });
  if (sliceTests.length !== 1)
    throw new WasmPatchError(`v86 main_loop has ${sliceTests.length} time-slice tests (expected exactly one): not the pinned v86 build`);
  if (chunkTests.length !== 1)
    throw new WasmPatchError(`v86 main_loop has ${chunkTests.length} chunk-length tests (expected exactly one): not the pinned v86 build`);
  const branch = sliceTests[0]!;
  Breaks.setCondition(branch, module.i32.and(Breaks.getCondition(branch), module.i32.eqz(module.global.get("twinvm$yield", binaryen.i32))));
  Binaries.setRight(chunkTests[0]!, module.global.get("twinvm$chunk", binaryen.i32));
}

/** `(i32.lt_u (i32.sub ... ...) (i32.const 100003))` */
function isChunkLastsTest(expression: binaryen.ExpressionRef): boolean {
  if (binaryen.getExpressionId(expression) !== binaryen.BinaryId) return false;
  const lt = binaryen.getExpressionInfo(expression) as binaryen.BinaryInfo;
  if (lt.op !== binaryen.LtUInt32 || binaryen.getExpressionId(lt.right) !== binaryen.ConstId || binaryen.getExpressionId(lt.left) !== binaryen.BinaryId)
    return false;
  if ((binaryen.getExpressionInfo(lt.right) as binaryen.ConstInfo).value !== V86_CHUNK_INSTRUCTIONS) return false;
  return (binaryen.getExpressionInfo(lt.left) as binaryen.BinaryInfo).op === binaryen.SubInt32;
}

/** `(i32.eqz (f64.gt (f64.sub (local.get a) (local.get b)) (f64.const 1)))` */
function isSliceLastsTest(expression: binaryen.ExpressionRef): boolean {
  const is = (ref: binaryen.ExpressionRef, id: number) => binaryen.getExpressionId(ref) === id;
  if (!is(expression, binaryen.UnaryId)) return false;
  const eqz = binaryen.getExpressionInfo(expression) as binaryen.UnaryInfo;
  if (eqz.op !== binaryen.EqZInt32 || !is(eqz.value, binaryen.BinaryId)) return false;
  const gt = binaryen.getExpressionInfo(eqz.value) as binaryen.BinaryInfo;
  if (gt.op !== binaryen.GtFloat64 || !is(gt.left, binaryen.BinaryId) || !is(gt.right, binaryen.ConstId)) return false;
  const sub = binaryen.getExpressionInfo(gt.left) as binaryen.BinaryInfo;
  if (sub.op !== binaryen.SubFloat64 || (binaryen.getExpressionInfo(gt.right) as binaryen.ConstInfo).value !== 1) return false;
  return is(sub.left, binaryen.LocalGetId) && is(sub.right, binaryen.LocalGetId);
}

/** Calls `visit` on every expression of a tree; refuses kinds it does not know the children of. */
function visitExpressions(root: binaryen.ExpressionRef, visit: (expression: binaryen.ExpressionRef) => void): void {
  const pending = [root];
  while (pending.length > 0) {
    const expression = pending.pop()!;
    if (expression === 0) continue;
    visit(expression);
    pending.push(...childrenOf(expression));
  }
}

function childrenOf(expression: binaryen.ExpressionRef): binaryen.ExpressionRef[] {
  const id = binaryen.getExpressionId(expression);
  if (LEAF_EXPRESSIONS.has(id)) return [];
  if (!KNOWN_EXPRESSIONS.has(id)) throw new WasmPatchError(`v86 holds an expression of kind ${id} the patcher does not know: not the pinned v86 build`);
  const info = binaryen.getExpressionInfo(expression) as binaryen.ExpressionInfo & Record<string, unknown>;
  const refs = (...keys: string[]) => keys.map((key) => info[key] as binaryen.ExpressionRef);
  switch (id) {
    case binaryen.BlockId:
      return [...(info["children"] as binaryen.ExpressionRef[])];
    case binaryen.IfId:
      return refs("condition", "ifTrue", "ifFalse");
    case binaryen.LoopId:
      return refs("body");
    case binaryen.BreakId:
      return refs("condition", "value");
    case binaryen.SwitchId:
      return refs("condition", "value");
    case binaryen.CallId:
      return [...(info["operands"] as binaryen.ExpressionRef[])];
    case binaryen.CallIndirectId:
      return [...refs("target"), ...(info["operands"] as binaryen.ExpressionRef[])];
    case binaryen.LocalSetId:
    case binaryen.GlobalSetId:
    case binaryen.UnaryId:
    case binaryen.DropId:
    case binaryen.ReturnId:
      return refs("value");
    case binaryen.LoadId:
      return refs("ptr");
    case binaryen.StoreId:
      return refs("ptr", "value");
    case binaryen.BinaryId:
      return refs("left", "right");
    case binaryen.SelectId:
      return refs("ifTrue", "ifFalse", "condition");
    case binaryen.MemoryGrowId:
      return refs("delta");
    case binaryen.MemoryCopyId:
      return refs("dest", "source", "size");
    case binaryen.MemoryFillId:
      return refs("dest", "value", "size");
    default:
      return [];
  }
}

/** Expressions without children (binaryen has no info for some of them). */
const LEAF_EXPRESSIONS = new Set([binaryen.NopId, binaryen.UnreachableId, binaryen.LocalGetId, binaryen.GlobalGetId, binaryen.ConstId, binaryen.MemorySizeId]);
const KNOWN_EXPRESSIONS = new Set([
  binaryen.BlockId,
  binaryen.IfId,
  binaryen.LoopId,
  binaryen.BreakId,
  binaryen.SwitchId,
  binaryen.CallId,
  binaryen.CallIndirectId,
  binaryen.LocalSetId,
  binaryen.GlobalSetId,
  binaryen.UnaryId,
  binaryen.DropId,
  binaryen.ReturnId,
  binaryen.LoadId,
  binaryen.StoreId,
  binaryen.BinaryId,
  binaryen.SelectId,
  binaryen.MemoryGrowId,
  binaryen.MemoryCopyId,
  binaryen.MemoryFillId,
]);
