import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import {
  createRuntime, referenceAttention, maxAbsDiff, UseAfterFreeError, WasmFeatureError, WasmOutOfMemoryError,
} from "../src/index.ts";
import { BUILDS, randomArray } from "./helpers.ts";

const simdUrl = new URL("../build/gqa-simd.wasm", import.meta.url);

function smallAttention() {
  const [H, KV, D, S] = [4, 2, 8, 5];
  return { q: randomArray(S * H * D, 1), k: randomArray(S * KV * D, 2), v: randomArray(S * KV * D, 3), numHeads: H, numKvHeads: KV, headDim: D, causal: true };
}

function assertWorks(rt: Awaited<ReturnType<typeof createRuntime>>) {
  const args = smallAttention();
  assert.ok(maxAbsDiff(rt.attention(args), referenceAttention(args)) < 1e-5, "small attention result");
}

describe("createRuntime", () => {
  it("with no arguments loads the best build this engine validates", async () => {
    const rt = await createRuntime();
    assert.equal(rt.build, BUILDS.includes("relaxed") ? "relaxed" : "simd");
    assertWorks(rt);
  });

  it("accepts a precompiled WebAssembly.Module (as Cloudflare Workers need)", async () => {
    const module = await WebAssembly.compile(await readFile(simdUrl));
    const rt = await createRuntime(module);
    assert.equal(rt.build, "simd");
    assertWorks(rt);
  });

  it("accepts bytes, a URL, a path, and options", async () => {
    const bytes = await readFile(simdUrl);
    for (const source of [bytes, new Uint8Array(bytes).buffer, simdUrl, fileURLToPath(simdUrl)]) {
      const rt = await createRuntime(source);
      assert.equal(rt.build, "simd");
      assertWorks(rt);
    }
    const rt = await createRuntime({ build: "simd", initialMemoryBytes: 1 << 20, maxMemoryBytes: 64 << 20 });
    assert.equal(rt.stats().memoryLimitBytes, 64 << 20);
    assertWorks(rt);
  });

  it("rejects bytes that are not valid wasm with a WasmFeatureError", async () => {
    await assert.rejects(createRuntime(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 99])), WasmFeatureError);
  });

  it("rejects a valid module that is not a gqa-wasm build, naming the missing exports", async () => {
    const empty = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]);
    await assert.rejects(createRuntime(empty), /lacks the kernel exports heap_base/);
  });

  it("the kernels' export list and shared codes/structs (assembly/index.ts, assembly/abi.ts) are the ones the kernel table renders", async () => {
    const { renderAbi } = await import("../scripts/gen-abi.ts");
    for (const [path, text] of Object.entries(renderAbi())) {
      assert.equal(await readFile(new URL(`../${path}`, import.meta.url), "utf8"), text, `${path} is stale: run npm run asbuild`);
    }
  });

  it("every build's exports are the host's kernel table, names and arities (one place to add a kernel)", async () => {
    const { CODES, KERNELS, JOB_KERNELS, LINEAR_KERNELS, EMBED_KERNELS } = await import("../src/runtime/kernel-exports.ts");
    for (const build of ["simd", "relaxed", "simd-threads", "relaxed-threads"]) {
      const module = await WebAssembly.compile(await readFile(new URL(`../build/gqa-${build}.wasm`, import.meta.url)));
      const exported = WebAssembly.Module.exports(module).filter((e) => e.kind === "function").map((e) => e.name).sort();
      assert.deepEqual(exported, Object.keys(KERNELS).sort(), `${build}: assembly/index.ts and src/runtime/kernel-exports.ts list the same kernels`);
    }
    const rt = await createRuntime();
    for (const [name, spec] of Object.entries(KERNELS)) assert.equal((rt.kernels as unknown as Record<string, (...a: number[]) => unknown>)[name]!.length, spec.params.length, `${name} takes ${spec.params.length} arguments`);
    assert.deepEqual(JOB_KERNELS, ["", "attention_f32", "attention_paged", "attention_combine", "kv_write", "linear_f32", "linear_bf16", "linear_f16", "linear_q8_0", "linear_q4_0", "linear_q5_0", "linear_iq4_nl", "linear_q4_1", "linear_q5_1", "quantize_activations", "linear_q2_k", "linear_q3_k", "linear_q4_k", "linear_q5_k", "linear_q6_k", "linear_q6_k_u8", "linear_q5_0_u8", "linear_q5_1_u8", "linear_q5_k_u8", "embed_rows_f32", "embed_rows_bf16", "embed_rows_f16", "embed_rows_q8_0", "embed_rows_q4_0", "embed_rows_q5_0", "embed_rows_iq4_nl", "embed_rows_q4_1", "embed_rows_q5_1", "embed_rows_q2_k", "embed_rows_q3_k", "embed_rows_q4_k", "embed_rows_q5_k", "embed_rows_q6_k", "embed_rows_q6_k_u8", "embed_rows_q5_0_u8", "embed_rows_q5_1_u8", "embed_rows_q5_k_u8", "rmsnorm_f32", "rmsnorm_add_f32", "rope_f32", "swiglu_f32", "geglu_tanh_f32", "scale_f32", "add_scaled_f32", "softcap_f32"]);
    // The kernels loop over the weight formats' codes 0 .. WEIGHT_FORMAT_COUNT - 1.
    const formatCodes = Object.entries(CODES).filter(([k]) => k.startsWith("WEIGHT_") && k !== "WEIGHT_FORMAT_COUNT").map(([, v]) => v).sort((a, b) => a - b);
    assert.deepEqual(formatCodes, Array.from({ length: CODES.WEIGHT_FORMAT_COUNT }, (_, i) => i));
    assert.deepEqual(LINEAR_KERNELS, { f32: "linear_f32", bf16: "linear_bf16", f16: "linear_f16", q8_0: "linear_q8_0", q4_0: "linear_q4_0", q5_0: "linear_q5_0", iq4_nl: "linear_iq4_nl", q4_1: "linear_q4_1", q5_1: "linear_q5_1", q2_k: "linear_q2_k", q3_k: "linear_q3_k", q4_k: "linear_q4_k", q5_k: "linear_q5_k", q6_k: "linear_q6_k", q6_k_u8: "linear_q6_k_u8", q5_0_u8: "linear_q5_0_u8", q5_1_u8: "linear_q5_1_u8", q5_k_u8: "linear_q5_k_u8" });
    assert.deepEqual(EMBED_KERNELS, { f32: "embed_rows_f32", bf16: "embed_rows_bf16", f16: "embed_rows_f16", q8_0: "embed_rows_q8_0", q4_0: "embed_rows_q4_0", q5_0: "embed_rows_q5_0", iq4_nl: "embed_rows_iq4_nl", q4_1: "embed_rows_q4_1", q5_1: "embed_rows_q5_1", q2_k: "embed_rows_q2_k", q3_k: "embed_rows_q3_k", q4_k: "embed_rows_q4_k", q5_k: "embed_rows_q5_k", q6_k: "embed_rows_q6_k", q6_k_u8: "embed_rows_q6_k_u8", q5_0_u8: "embed_rows_q5_0_u8", q5_1_u8: "embed_rows_q5_1_u8", q5_k_u8: "embed_rows_q5_k_u8" });
  });

  it("rejects a missing file with a message that says how to build", async () => {
    await assert.rejects(createRuntime("/nonexistent/gqa.wasm"), /cannot read .*npm run build/);
  });

  it("rejects options of the wrong type", async () => {
    await assert.rejects(createRuntime(42 as never), TypeError);
  });
});

describe("argument errors (thrown before any kernel runs)", () => {
  const cases: [string, (a: ReturnType<typeof smallAttention>) => object, RegExp, ErrorConstructor][] = [
    ["q not a Float32Array", (a) => ({ ...a, q: Array.from(a.q) }), /attention: q must be a Float32Array, got Array/, TypeError],
    ["k a Float64Array", (a) => ({ ...a, k: new Float64Array(a.k) }), /k must be a Float32Array, got Float64Array/, TypeError],
    ["heads not divisible", (a) => ({ ...a, numHeads: 3, q: new Float32Array(3 * 8) }), /numHeads \(3\) must be a multiple of numKvHeads \(2\)/, RangeError],
    ["numHeads zero", (a) => ({ ...a, numHeads: 0 }), /numHeads must be positive, got 0/, RangeError],
    ["headDim fractional", (a) => ({ ...a, headDim: 7.5 }), /headDim must be an integer, got number 7.5/, TypeError],
    ["numKvHeads missing", (a) => ({ ...a, numKvHeads: undefined }), /numKvHeads must be an integer, got undefined/, TypeError],
    ["q length not a whole number of rows", (a) => ({ ...a, q: a.q.subarray(1) }), /q has 159 elements, not a multiple of 32; expected \[seqQ, numHeads, headDim\]/, RangeError],
    ["k empty", (a) => ({ ...a, k: new Float32Array(0), v: new Float32Array(0) }), /k is empty/, RangeError],
    ["v length differs from k", (a) => ({ ...a, v: a.v.subarray(16) }), /v has 64 elements but k has 80/, RangeError],
    ["scale NaN", (a) => ({ ...a, scale: NaN }), /scale must be a finite number, got NaN/, RangeError],
    ["scale Infinity", (a) => ({ ...a, scale: Infinity }), /scale must be a finite number/, RangeError],
    ["causal a string", (a) => ({ ...a, causal: "yes" }), /causal must be a boolean/, TypeError],
  ];
  for (const [title, mutate, message, type] of cases) {
    it(`attention: ${title}`, async () => {
      const rt = await createRuntime();
      const before = rt.stats();
      assert.throws(() => rt.attention(mutate(smallAttention()) as never), (e: Error) => e instanceof type && message.test(e.message));
      assert.deepEqual(rt.stats(), before);
      assertWorks(rt);
    });
  }

  it("linear: shapes and types", async () => {
    const rt = await createRuntime();
    const x = randomArray(6, 1), weight = randomArray(6, 2);
    assert.throws(() => rt.linear({ x, weight, inFeatures: 4, outFeatures: 2 }), /linear: x has 6 elements, not a multiple of 4/);
    assert.throws(() => rt.linear({ x, weight, inFeatures: 3, outFeatures: 3 }), /weight has 6 elements; expected \[outFeatures, inFeatures\] = 9/);
    assert.throws(() => rt.linear({ x, weight, bias: new Float32Array(3), inFeatures: 3, outFeatures: 2 }), /bias has 3 elements; expected \[outFeatures\] = 2/);
    assert.throws(() => rt.linear({ x, weight, inFeatures: 0, outFeatures: 2 }), RangeError);
    assert.throws(() => rt.linear({ x: null as never, weight, inFeatures: 3, outFeatures: 2 }), /x must be a Float32Array, got null/);
    assert.deepEqual(rt.linear({ x, weight, inFeatures: 3, outFeatures: 2 }).length, 4);
  });

  it("zero-copy calls: plain arrays, freed buffers, wrong out size, overlap", async () => {
    const rt = await createRuntime();
    const a = smallAttention();
    const q = rt.upload(a.q), k = rt.upload(a.k), v = rt.upload(a.v), out = rt.alloc(a.q.length);
    const shape = { numHeads: 4, numKvHeads: 2, headDim: 8, causal: true };
    assert.throws(() => rt.attentionInto({ q: a.q as never, k, v, out, ...shape }), /attentionInto: q must be a WasmBuffer/);
    assert.throws(() => rt.attentionInto({ q, k, v, out: q, ...shape }), /out overlaps q/);
    const small = rt.alloc(8);
    assert.throws(() => rt.attentionInto({ q, k, v, out: small, ...shape }), /out has 8 elements; expected 160/);
    small.free();
    assert.throws(() => small.array, UseAfterFreeError);
    assert.throws(() => rt.attentionInto({ q, k, v: small, out, ...shape }), UseAfterFreeError);
    assert.throws(() => small.free(), UseAfterFreeError);
    rt.attentionInto({ q, k, v, out, ...shape });
    assert.ok(maxAbsDiff(out.array, referenceAttention(a)) < 1e-5, "attentionInto result");
  });
});

describe("memory: arenas, growth and out-of-memory", () => {
  it("grows memory as buffers are allocated, and views taken after growth see the data", async () => {
    const rt = await createRuntime({ initialMemoryBytes: 1 << 16 });
    const first = rt.upload(randomArray(1000, 5));
    const before = rt.memory.byteLength;
    const big = rt.alloc(8 << 20); // 32 MiB: forces memory.grow, detaching old views
    assert.ok(rt.memory.byteLength > before, "memory grew");
    assert.deepEqual(first.toFloat32Array(), randomArray(1000, 5));
    assert.equal(first.ptr % 64, 0);
    assert.equal(big.ptr % 64, 0);
    big.free(); first.free();
    assert.equal(rt.stats().persistentLiveBytes, 0);
  });

  it("persistent arena: freed blocks are coalesced and reused", async () => {
    const rt = await createRuntime();
    const blocks = Array.from({ length: 8 }, () => rt.alloc(1000));
    const addrs = blocks.map((b) => b.ptr);
    for (const b of blocks) b.free();
    const whole = rt.alloc(8 * 1000); // fits in the coalesced space of the eight
    assert.equal(whole.ptr, Math.min(...addrs));
    whole.free();
    assert.equal(rt.stats().persistentBlocks, 0);
  });

  it("scratch arena is reset after every call and reaches a steady size", async () => {
    const rt = await createRuntime();
    const args = smallAttention();
    rt.attention(args);
    const reserved = rt.scratch.reservedBytes;
    for (let i = 0; i < 5; i++) rt.attention(args);
    assert.equal(rt.scratch.usedBytes, 0);
    assert.equal(rt.scratch.reservedBytes, reserved);
    // A call larger than the chunk spills, then the next reset keeps one chunk of that size.
    const [H, KV, D, S] = [8, 8, 64, 1200];
    const big = { q: randomArray(S * H * D, 1), k: randomArray(S * KV * D, 2), v: randomArray(S * KV * D, 3), numHeads: H, numKvHeads: KV, headDim: D };
    rt.attention(big);
    const grown = rt.scratch.reservedBytes;
    assert.ok(grown >= 4 * S * H * D * 4, "scratch grew to the large call");
    rt.attention(big);
    assert.equal(rt.scratch.reservedBytes, grown);
  });

  it("an allocation past maxMemoryBytes throws WasmOutOfMemoryError and the runtime stays usable", async () => {
    const rt = await createRuntime({ maxMemoryBytes: 16 << 20 });
    const keep = rt.upload(randomArray(1000, 9));
    const before = rt.stats();
    assert.throws(() => rt.alloc(8 << 20), (e: unknown) =>
      e instanceof WasmOutOfMemoryError && e instanceof RangeError && /cannot grow to .* the limit is 16.0 MiB/.test(e.message) && e.requestedBytes >= 32 << 20);
    assert.deepEqual(rt.stats(), before);
    // An op whose inputs do not fit fails the same way, and scratch is released.
    const [H, KV, D, S] = [8, 8, 64, 4096];
    const huge = { q: new Float32Array(S * H * D), k: new Float32Array(S * KV * D), v: new Float32Array(S * KV * D), numHeads: H, numKvHeads: KV, headDim: D };
    assert.throws(() => rt.attention(huge), WasmOutOfMemoryError);
    assert.equal(rt.scratch.usedBytes, 0);
    assertWorks(rt);
    assert.deepEqual(keep.toFloat32Array(), randomArray(1000, 9));
    // Memory that was reserved stays reusable: a block that fits is still handed out.
    const fits = rt.alloc(1 << 20);
    fits.free();
  });

  it("page pool: pages are aligned, reused after free, and a capped pool fails cleanly", async () => {
    const rt = await createRuntime();
    const pool = rt.createPagePool(16 * 8 * 128 * 4, 10); // 16 tokens x 8 KV heads x 128 x f32
    const pages = pool.allocPages(7);
    assert.equal(new Set(pages).size, 7);
    for (const p of pages) assert.equal(p % 64, 0);
    assert.equal(pool.pagesUsed, 7);
    pool.freePage(pages[3]!);
    assert.equal(pool.allocPage(), pages[3]);
    assert.throws(() => pool.allocPages(4), (e: unknown) => e instanceof WasmOutOfMemoryError && /page pool is full/.test((e as Error).message));
    assert.equal(pool.pagesUsed, 7); // all-or-nothing
    pool.allocPages(3);
    assert.equal(pool.pagesFree, 0);
    pool.dispose();
    assert.equal(rt.stats().persistentLiveBytes, 0);
  });
});
