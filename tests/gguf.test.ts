// GGUF: the reader against hostile headers, the writer round trip, GGUF files as a model source
// (twins of safetensors folders give the same logits and tokens), llama.cpp's q/k permutation,
// the tokenizer from metadata, splits, the types converted at load, and `gqa-wasm quantize`.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createRuntime, loadModel, parseModelConfig, type LanguageModel, type Runtime } from "../src/index.ts";
import { withContextLength } from "../src/model/config.ts";
import { GGUFError, GGUFNeedMore, parseGGUFHeader, readGGUFHeader, writeGGUF, type GGMLType, type GGUFTensorToWrite, type GGUFValue } from "../src/formats/gguf.ts";
import { f16ToF32, f32ToF16 } from "../src/formats/half.ts";
import { dequantizeGGML, IQ4_LEVELS, iq4xsToIq4nl, quantizeGGML, quantRowBytes, weightDtypeOf, type QuantDtype } from "../src/formats/quant.ts";
import { seededArray as randomArray } from "../src/random.ts";
import { exportGGUF, folderToGGUF } from "../src/model/gguf-export.ts";
import { expectedTensors } from "../src/model/architecture.ts";
import { BUILDS, runtimeFor } from "./helpers.ts";
import { base, metadataOf, randomWeights, referenceForward, SENTENCEPIECE_VOCAB, textModel, withRandomBlocks, writeModelFolder, writeSentencePieceTokenizer, writeTokenizer } from "./model-helpers.ts";

const cli = fileURLToPath(new URL("../dist/cli.js", import.meta.url));

function logitsOf(model: LanguageModel, ids: number[]): Float32Array {
  const cache = model.transformer.createCache();
  const out = model.transformer.forward(cache, cache.createSequence(), ids);
  cache.dispose();
  return out;
}
const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);

describe("GGUF files", function () {
  this.timeout(120_000);
  const dirs: string[] = [];
  const tmp = () => { const d = mkdtempSync(join(tmpdir(), "gqa-gguf-")); dirs.push(d); return d; };
  let rt: Runtime;
  before(async () => { rt = await createRuntime(); });
  after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

  describe("the reader", () => {
    const sample = () => writeGGUF({
      "general.architecture": { type: "string", value: "llama" },
      "a.u32": { type: "u32", value: 7 }, "a.f32": { type: "f32", value: 0.5 }, "a.bool": { type: "bool", value: true },
      "a.list": { type: "array", itemType: "string", value: ["x", "yz", ""] }, "a.ints": { type: "array", itemType: "i32", value: [-1, 2] },
    }, {
      "m.weight": { shape: [2, 32], type: "Q8_0", data: new Uint8Array(2 * 34).fill(1) },
      "v.weight": { shape: [3], type: "F32", data: new Uint8Array(new Float32Array([1, 2, 3]).buffer) },
    });

    it("reads back what the writer wrote: typed metadata, shapes in Hugging Face order, aligned data", () => {
      const bytes = sample();
      const h = parseGGUFHeader(bytes, bytes.length);
      assert.equal(h.version, 3);
      assert.equal(h.metadata.get("a.u32"), 7);
      assert.equal(h.metadata.get("a.f32"), 0.5);
      assert.equal(h.metadata.get("a.bool"), true);
      assert.deepEqual(h.metadata.get("a.list"), ["x", "yz", ""]);
      assert.deepEqual(h.metadata.get("a.ints"), [-1, 2]);
      const m = h.tensors.get("m.weight")!, v = h.tensors.get("v.weight")!;
      assert.deepEqual([m.shape, m.type, m.byteLength], [[2, 32], "Q8_0", 68]);
      assert.equal(m.offset % 32, 0);
      assert.deepEqual(Array.from(new Float32Array(bytes.slice(v.offset, v.offset + 12).buffer)), [1, 2, 3]);
    });

    it("asks for more bytes while the header goes on, and reads it through a growing prefix", async () => {
      const bytes = sample();
      assert.throws(() => parseGGUFHeader(bytes.subarray(0, 40), bytes.length), GGUFNeedMore);
      const reads: number[] = [];
      const h = await readGGUFHeader(async (n) => { reads.push(n); return bytes.subarray(0, n); }, bytes.length);
      assert.equal(h.tensors.size, 2);
      assert.deepEqual(reads, [bytes.length], "a small file is read at once");
    });

    const header = (parts: (number | bigint | string)[]): Uint8Array => {
      const chunks: number[] = [];
      for (const p of parts) {
        if (typeof p === "string") { const b = new TextEncoder().encode(p); chunks.push(...new Uint8Array(new BigUint64Array([BigInt(b.length)]).buffer), ...b); }
        else if (typeof p === "bigint") chunks.push(...new Uint8Array(new BigUint64Array([p]).buffer));
        else chunks.push(...new Uint8Array(new Uint32Array([p]).buffer));
      }
      return Uint8Array.from([...chunks, ...new Array(64).fill(0)]);
    };
    const MAGIC = 0x46554747;
    for (const [what, bytes, message] of [
      ["a bad magic", header([0x12345678, 3, 0n, 0n]), /not a GGUF file/],
      ["version 1", header([MAGIC, 1, 0n, 0n]), /version 1 is not supported/],
      ["a tensor count of 2^40", header([MAGIC, 3, 1n << 40n, 0n]), /the tensor count is \d+, more than the \d+ bytes left could hold/],
      ["a metadata count of 2^62", header([MAGIC, 3, 0n, 1n << 62n]), /too large|more than the/],
      ["a key of 2^50 bytes", header([MAGIC, 3, 0n, 1n, 1n << 50n]), /claims|too large/],
      ["an array of 2^40 u32", header([MAGIC, 3, 0n, 1n, "k", 9, 4, 1n << 40n]), /the length of k is \d+, more than/],
      ["an unknown value type", header([MAGIC, 3, 0n, 1n, "k", 99]), /unknown value type 99/],
      ["a tensor with 5 dimensions", header([MAGIC, 3, 1n, 0n, "t", 5]), /5 dimensions/],
      ["a tensor dimension of 0", header([MAGIC, 3, 1n, 0n, "t", 1, 0n]), /a dimension of 0/],
      ["an unknown tensor type", header([MAGIC, 3, 1n, 0n, "t", 1, 32n, 99, 0n]), /ggml type 99/],
      ["a tensor type not read (IQ2_XXS), named", header([MAGIC, 3, 1n, 0n, "t", 1, 256n, 16, 0n]), /tensor t is IQ2_XXS \(ggml type 16\), which this runtime does not read \(it reads .*IQ4_XS/],
      ["a misaligned offset", header([MAGIC, 3, 1n, 0n, "t", 1, 4n, 0, 4n]), /not aligned to 32/],
      ["data past the end", header([MAGIC, 3, 1n, 0n, "t", 1, 1n << 30n, 0, 0n]), /larger than the file|ends past/],
      ["rows that are not whole blocks", header([MAGIC, 3, 1n, 0n, "t", 2, 16n, 1n, 8, 0n]), /rows of 16 are not whole Q8_0 blocks of 32/],
      ["two tensors overlapping", header([MAGIC, 3, 2n, 0n, "a", 1, 8n, 0, 0n, "b", 1, 8n, 0, 0n]), /overlap/],
      ["a tensor named twice", header([MAGIC, 3, 2n, 0n, "a", 1, 1n, 0, 0n, "a", 1, 1n, 0, 32n]), /appears twice/],
      ["an alignment of 3", header([MAGIC, 3, 0n, 1n, "general.alignment", 4, 3]), /not a power of two/],
      ["a bool holding 2", header([MAGIC, 3, 0n, 1n, "k", 7]).map((b, i, a) => (i === a.length - 64 ? 2 : b)), /a bool holds 2/],
      // A key whose length ran over the keys after it (a corrupted length): shown quoted and cut, on one line.
      ["a long key of control characters with an unknown type", header([MAGIC, 3, 0n, 1n, `phi3.rope\n${"x".repeat(3000)}`, 99]), /^x\.gguf: "phi3\.rope\\nx{70}\.\.\.": unknown value type 99$/],
      ["a tensor name of 64 characters (ggml's are under 64)", header([MAGIC, 3, 1n, 0n, "t".repeat(64), 1, 32n, 0, 0n]), /tensor 0's name has 64 characters \(ggml's are under 64\)/],
      ["a tensor name with a newline", header([MAGIC, 3, 1n, 0n, "blk.0.\nx", 1, 32n, 0, 0n]), /tensor 0's name "blk\.0\.\\nx" holds a control character/],
    ] as const) {
      it(`refuses ${what} with a GGUFError, allocating nothing in proportion`, () => {
        assert.throws(() => parseGGUFHeader(bytes, bytes.length, "x.gguf"), (e: Error) => e instanceof GGUFError && message.test(e.message) && e.message.startsWith("x.gguf: ") && !e.message.includes("\n"));
      });
    }
  });

  describe("K-quant and 5-bit dequantizers follow ggml's block layouts", () => {
    it("Q4_1, Q5_0, Q5_1: d, m and the high bits", () => {
      const q41 = new Uint8Array(20);
      new DataView(q41.buffer).setUint16(0, f32ToF16(0.5), true);
      new DataView(q41.buffer).setUint16(2, f32ToF16(-1), true);
      q41[4] = 0x3 | (0xa << 4); // weight 0 = 3, weight 16 = 10
      const w41 = dequantizeGGML("Q4_1", q41, 32);
      assert.deepEqual([w41[0], w41[16], w41[1]], [0.5 * 3 - 1, 0.5 * 10 - 1, -1]);
      const q50 = new Uint8Array(22);
      new DataView(q50.buffer).setUint16(0, f32ToF16(2), true);
      new DataView(q50.buffer).setUint32(2, (1 << 0) | (1 << 17), true); // high bit of weight 0 and of weight 17
      q50[6] = 0x1; q50[7] = 0x20;
      const w50 = dequantizeGGML("Q5_0", q50, 32);
      assert.deepEqual([w50[0], w50[16], w50[17], w50[1]], [2 * (17 - 16), 2 * (0 - 16), 2 * (18 - 16), 2 * (0 - 16)]);
      const q51 = new Uint8Array(24);
      new DataView(q51.buffer).setUint16(0, f32ToF16(1), true);
      new DataView(q51.buffer).setUint16(2, f32ToF16(0.25), true);
      new DataView(q51.buffer).setUint32(4, 1 << 31, true); // high bit of weight 31
      q51[8 + 15] = 0xf0;
      const w51 = dequantizeGGML("Q5_1", q51, 32);
      assert.deepEqual([w51[31], w51[15]], [31 + 0.25, 0.25]);
    });

    it("Q4_K and Q5_K: 6-bit scales and mins of 8 sub-blocks, nibbles two sub-blocks per 32 bytes", () => {
      const q = new Uint8Array(144);
      const v = new DataView(q.buffer);
      v.setUint16(0, f32ToF16(1), true); v.setUint16(2, f32ToF16(0.5), true);
      q[4 + 0] = 2; q[4 + 4] = 4;            // sub-block 0: scale 2, min 4
      q[4 + 1] = 3 | (1 << 6);               // sub-block 1: scale 3 (+ high bits of sub-block 5's scale)
      q[4 + 8 + 1] = 0x21;                   // sub-block 5: scale 1 | (1 << 4) = 17, min 2 | ...
      q[16] = 0x75;                          // weight 0 = 5 (sub-block 0), weight 32 = 7 (sub-block 1)
      const w = dequantizeGGML("Q4_K", q, 256);
      assert.equal(w[0], 1 * 2 * 5 - 0.5 * 4);
      assert.equal(w[32], 1 * 3 * 7 - 0.5 * 0);
      assert.equal(w[5 * 32], 1 * 17 * 0 - 0.5 * (2 | ((q[4 + 5]! >> 6) << 4)));
      const q5 = new Uint8Array(176);
      q5.set(q.subarray(0, 16));
      q5[16] = 0b11;                         // weight 0 and weight 32 get +16
      q5[48] = 0x75;
      const w5 = dequantizeGGML("Q5_K", q5, 256);
      assert.equal(w5[0], 1 * 2 * 21 - 0.5 * 4);
      assert.equal(w5[32], 1 * 3 * 23);
    });

    it("Q5_0 and Q4_K written by our quantizers read back within their steps (every scale bit, nibble and high bit in place)", () => {
      const K = 512, x = randomArray(4 * K, 3);
      // Q5_0: d = max|x| / 16 per block of 32 (asymmetric range: up to one step off at +max).
      const q5 = quantizeGGML("Q5_0", x, K);
      assert.equal(q5.length, (4 * K / 32) * 22);
      const y5 = dequantizeGGML("Q5_0", q5, x.length);
      x.forEach((v, i) => assert.ok(Math.abs(v - y5[i]!) <= (1 / 16) * 1.02, `Q5_0 element ${i}: ${v} -> ${y5[i]}`));
      // Q4_K: each sub-block's step and offset fitted by least squares (llama.cpp's search), which
      // may clip a value to lower the error of the rest: bounded in RMS against the min/max fit's
      // half step of (max - min) / 15, and no value off by more than two steps.
      const q4 = quantizeGGML("Q4_K", x, K);
      assert.equal(q4.length, (4 * K / 256) * 144);
      const y4 = dequantizeGGML("Q4_K", q4, x.length);
      let se = 0;
      x.forEach((v, i) => { se += (v - y4[i]!) ** 2; assert.ok(Math.abs(v - y4[i]!) <= 2 * (2 / 15), `Q4_K element ${i}: ${v} -> ${y4[i]}`); });
      const rms = Math.sqrt(se / x.length), uniformHalfStep = 2 / 15 / Math.sqrt(12); // the RMS of a uniform error over one step
      assert.ok(rms <= uniformHalfStep, `Q4_K RMS error ${rms} vs ${uniformHalfStep}`);
    });

    it("Q2_K, Q3_K and IQ4_XS read as ggml's reference dequantizers (transcribed plainly here) read random blocks; IQ4_XS converts to IQ4_NL blocks of the same levels", () => {
      let seed = 7;
      const rand = () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return Math.floor((seed / 0x7fffffff) * 256); };
      const blocks = 3, f16 = (b: Uint8Array, at: number) => f16ToF32(b[at]! | (b[at + 1]! << 8));
      const randomBlocks = (bytes: number, scaleAt: number[]) => {
        const b = Uint8Array.from({ length: blocks * bytes }, rand);
        for (let i = 0; i < blocks; i++) for (const o of scaleAt) new DataView(b.buffer).setUint16(i * bytes + o, f32ToF16(0.01 * (i + 1)), true);
        return b;
      };
      // Q2_K (dequantize_row_q2_K): scales[16], qs[64], d, dmin.
      const q2 = randomBlocks(84, [80, 82]), want2: number[] = [];
      for (let i = 0; i < blocks; i++) {
        const x = q2.subarray(84 * i), d = f16(x, 80), min = f16(x, 82);
        let is = 0;
        for (let n = 0; n < 256; n += 128) {
          const q = x.subarray(16 + n / 4);
          for (let j = 0, shift = 0; j < 4; j++, shift += 2) {
            for (const half of [0, 16]) {
              const sc = x[is++]!, dl = Math.fround(d * (sc & 0xf)), ml = Math.fround(min * (sc >> 4));
              for (let l = 0; l < 16; l++) want2.push(Math.fround(Math.fround(dl * ((q[l + half]! >> shift) & 3)) - ml));
            }
          }
        }
      }
      assert.deepEqual(Array.from(dequantizeGGML("Q2_K", q2, blocks * 256)), want2);
      // Q3_K (dequantize_row_q3_K): hmask[32], qs[64], scales[12] (unpacked through four u32), d.
      const q3 = randomBlocks(110, [108]), want3: number[] = [];
      for (let i = 0; i < blocks; i++) {
        const x = q3.subarray(110 * i), d = f16(x, 108), hm = x.subarray(0, 32), v = new DataView(x.buffer, x.byteOffset + 96, 12);
        const aux = [v.getUint32(0, true), v.getUint32(4, true), v.getUint32(8, true), 0], tmp = aux[2]!, k1 = 0x03030303, k2 = 0x0f0f0f0f;
        aux[2] = ((aux[0]! >>> 4) & k2) | (((tmp >>> 4) & k1) << 4);
        aux[3] = ((aux[1]! >>> 4) & k2) | (((tmp >>> 6) & k1) << 4);
        aux[0] = (aux[0]! & k2) | (((tmp >>> 0) & k1) << 4);
        aux[1] = (aux[1]! & k2) | (((tmp >>> 2) & k1) << 4);
        const sc = new Int8Array(Uint32Array.from(aux).buffer);
        let is = 0, m = 1;
        for (let n = 0; n < 256; n += 128) {
          const q = x.subarray(32 + n / 4);
          for (let j = 0, shift = 0; j < 4; j++, shift += 2, m <<= 1) {
            for (const half of [0, 16]) {
              const dl = Math.fround(d * (sc[is++]! - 32));
              for (let l = 0; l < 16; l++) want3.push(Math.fround(dl * (((q[l + half]! >> shift) & 3) - (hm[l + half]! & m ? 0 : 4))));
            }
          }
        }
      }
      assert.deepEqual(Array.from(dequantizeGGML("Q3_K", q3, blocks * 256)), want3);
      // IQ4_XS (dequantize_row_iq4_xs): d, scales_h, scales_l[4], qs[128].
      const xs = randomBlocks(136, [0]), want4: number[] = [];
      for (let i = 0; i < blocks; i++) {
        const x = xs.subarray(136 * i), d = f16(x, 0), scalesH = x[2]! | (x[3]! << 8);
        for (let ib = 0; ib < 8; ib++) {
          const ls = ((x[4 + (ib >> 1)]! >> (4 * (ib % 2))) & 0xf) | (((scalesH >> (2 * ib)) & 3) << 4), dl = Math.fround(d * (ls - 32)), qs = x.subarray(8 + 16 * ib);
          const block = new Array<number>(32);
          for (let j = 0; j < 16; j++) { block[j] = Math.fround(dl * IQ4_LEVELS[qs[j]! & 0xf]!); block[j + 16] = Math.fround(dl * IQ4_LEVELS[qs[j]! >> 4]!); }
          want4.push(...block);
        }
      }
      assert.deepEqual(Array.from(dequantizeGGML("IQ4_XS", xs, blocks * 256)), want4);
      // As IQ4_NL: every level as it was, each 32's scale the f16 nearest d·(ls - 32).
      const nl = dequantizeGGML("IQ4_NL", iq4xsToIq4nl(xs, blocks * 256), blocks * 256);
      nl.forEach((v, k) => assert.ok(Math.abs(v - want4[k]!) <= Math.abs(want4[k]!) * 2 ** -11, `element ${k}: ${v} vs ${want4[k]}`));
    });

    it("Q6_K: 4 low and 2 high bits, 16 signed scales, d last", () => {
      const q = new Uint8Array(210);
      new DataView(q.buffer).setUint16(208, f32ToF16(0.5), true);
      q[192] = 2; q[192 + 2] = -3 & 0xff;      // scales of weights 0.. and 32..
      q[0] = 0x0f | (0x1 << 4);               // weight 0 low 15, weight 64 low 1
      q[128] = 0b10;                           // weight 0 high bits 2
      const w = dequantizeGGML("Q6_K", q, 256);
      assert.equal(w[0], 0.5 * 2 * ((15 | (2 << 4)) - 32));
      assert.equal(w[32], 0.5 * -3 * (0 - 32));
      assert.equal(w[64], 0.5 * 0 * (1 - 32));
    });
  });

  describe("as a model source", () => {
    const models: [string, Record<string, unknown>][] = [
      ["llama GQA (q/k rows permuted by the converter)", { ...textModel, hidden_size: 64, intermediate_size: 96 }],
      ["qwen2 with biases (not permuted)", { ...textModel, model_type: "qwen2", hidden_size: 64, intermediate_size: 96 }],
      ["llama MQA with tied embeddings and an explicit head_dim", { ...textModel, hidden_size: 64, intermediate_size: 96, num_key_value_heads: 1, head_dim: 32, tie_word_embeddings: true }],
      ["qwen3 with q/k norms (not permuted)", { ...textModel, model_type: "qwen3", hidden_size: 64, intermediate_size: 96, head_dim: 32, tie_word_embeddings: true }],
      ["llama with attention_bias (q/k/v and o_proj biases; q/k biases permuted)", { ...textModel, hidden_size: 64, intermediate_size: 96, attention_bias: true }],
      ["smollm3 (every 4th layer NoPE, as llama.cpp's smollm3; q/k permuted)", { ...textModel, model_type: "smollm3", num_hidden_layers: 4, hidden_size: 64, intermediate_size: 96, tie_word_embeddings: true }],
      ["gemma3_text (norms written as 1 + w, 5 sliding layers of window 4 and a global one as llama.cpp's gemma3; not permuted)", { ...textModel, model_type: "gemma3_text", num_hidden_layers: 6,
        hidden_size: 64, intermediate_size: 96, num_key_value_heads: 1, head_dim: 32, query_pre_attn_scalar: 32, sliding_window: 4, rope_theta: 1000000, rope_local_base_freq: 10000 }],
      ["granite (four multipliers as granite.*_scale; q/k permuted as llama's)", { ...textModel, model_type: "granite", hidden_size: 64, intermediate_size: 96, tie_word_embeddings: true,
        embedding_multiplier: 12, residual_multiplier: 0.22, attention_multiplier: 0.0625, logits_scaling: 8 }],
      ["gemma3_text with linear rope scaling on its global layer (Gemma 3 4B+: rope.scaling linear, the sliding layers unscaled as llama.cpp's)", { ...textModel, model_type: "gemma3_text",
        num_hidden_layers: 6, hidden_size: 64, intermediate_size: 96, num_key_value_heads: 1, head_dim: 32, query_pre_attn_scalar: 32, sliding_window: 4, rope_theta: 1000000,
        rope_local_base_freq: 10000, rope_scaling: { rope_type: "linear", factor: 8 } }],
      ["gemma2 (soft-capped scores and logits, every other layer sliding, as llama.cpp's gemma2)", { ...textModel, model_type: "gemma2", num_hidden_layers: 4,
        hidden_size: 64, intermediate_size: 96, num_key_value_heads: 2, head_dim: 32, query_pre_attn_scalar: 32, sliding_window: 4, attn_logit_softcapping: 3, final_logit_softcapping: 2 }],
      ["phi3 as Phi-3-mini-4k (attn_qkv and a fused ffn_up, MHA; not permuted; its window past the text)", { ...textModel, model_type: "phi3", hidden_size: 64, intermediate_size: 96,
        num_key_value_heads: 4, sliding_window: 2047, max_position_embeddings: 4096 }],
    ];
    const text = "the theme in a café, 42 times";
    // Phi-4-mini's form: RoPE on 3/4 of each head (rope.dimension_count), LongRoPE as
    // rope_factors_long / _short with phi3.rope.scaling.original_context_length and attn_factor.
    const phi4 = { ...textModel, model_type: "phi3", hidden_size: 64, intermediate_size: 96, partial_rotary_factor: 0.75, tie_word_embeddings: true,
      max_position_embeddings: 512, original_max_position_embeddings: 64,
      rope_scaling: { type: "longrope", short_factor: [1, 1.1, 1.3, 1.8, 2.5, 3], long_factor: [1, 2, 4, 8, 16, 32] } };
    models.push(["phi3 as Phi-4-mini (RoPE on 12 of 16, LongRoPE as rope_factors_long / _short)", phi4]);
    // Llama 3.1 / 3.2: llama3 rope scaling, which llama.cpp's files hold as rope_freqs.weight
    // (original_max_position_embeddings 64: frequencies in all three bands over a short text).
    const llama3 = { ...textModel, hidden_size: 64, intermediate_size: 96, head_dim: 16, tie_word_embeddings: true, rope_theta: 500000,
      rope_scaling: { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 } };
    models.push(["llama 3.x (llama3 rope scaling, written as rope_freqs.weight)", llama3]);
    for (const [name, config] of models) {
      it(`${name}: an F32 GGUF twin gives the folder's logits (<= 1e-4) and tokens; Q8_0 / Q4_0 files equal quantizing at load`, async () => {
        const dir = writeModelFolder(config);
        dirs.push(dir);
        writeTokenizer(dir);
        const folder = await loadModel(rt, dir);
        const ids = folder.encode(text);
        const want = logitsOf(folder, ids);
        for (const dtype of ["f32", "q8_0", "q4_0"] as const) {
          const file = join(tmp(), "model.gguf");
          writeFileSync(file, await folderToGGUF(dir, { dtype }));
          const gguf = await loadModel(rt, file);
          assert.deepEqual(gguf.encode(text), ids, `${dtype}: the same tokens`);
          assert.equal(gguf.tokenizer!.decode(ids), folder.tokenizer!.decode(ids));
          assert.equal(gguf.tokenizer!.applyChatTemplate([{ role: "user", content: "hi" }]), folder.tokenizer!.applyChatTemplate([{ role: "user", content: "hi" }]));
          assert.equal(gguf.transformer.weightDtype, dtype);
          const got = logitsOf(gguf, ids);
          if (dtype === "f32") assert.ok(maxDiff(got, want) <= 1e-4, `f32: ${maxDiff(got, want)}`);
          else {
            const atLoad = await loadModel(rt, dir, { dtype });
            // (rope_freqs.weight holds llama3's divisors rounded to f32, LongRoPE's files their factors and
            // attention factor: the angles differ in their last bits.)
            if (config === llama3 || config === phi4) assert.ok(maxDiff(got, logitsOf(atLoad, ids)) <= 1e-4, `${dtype}: as quantizing at load`);
            else assert.deepEqual(got, logitsOf(atLoad, ids), `${dtype}: the file's blocks are the ones quantizing at load makes`);
            atLoad.dispose();
          }
          assert.deepEqual((await gguf.generate(ids, { maxNewTokens: 6, temperature: 0, stopTokens: [] }).done).tokens.length, 6);
          gguf.dispose();
        }
        folder.dispose();
      });
    }

    it("LongRoPE: a context past original_max_position_embeddings (contextLength) rotates by the long factors, from the folder and its GGUF twin alike; past max_position_embeddings is one clear error", async () => {
      const dir = writeModelFolder(phi4);
      dirs.push(dir);
      const cfg = parseModelConfig(phi4), weights = randomWeights(cfg);
      const ids = Array.from({ length: 30 }, (_, i) => (i * 7 + 3) % 250);
      const file = join(tmp(), "phi4.gguf");
      writeFileSync(file, exportGGUF(cfg, (n) => weights.get(n)!, { dtype: "f32" }));
      const h = parseGGUFHeader(readFileSync(file));
      assert.deepEqual([h.tensors.get("rope_factors_long.weight")?.shape, h.tensors.get("rope_factors_short.weight")?.shape, h.metadata.get("phi3.rope.dimension_count"),
        h.metadata.get("phi3.context_length"), h.metadata.get("phi3.rope.scaling.original_context_length")], [[6], [6], 12, 512, 64]);
      assert.ok(Math.abs((h.metadata.get("phi3.rope.scaling.attn_factor") as number) - Math.sqrt(1 + Math.log(8) / Math.log(64))) < 1e-6);
      assert.ok(h.tensors.has("blk.0.attn_qkv.weight") && h.tensors.get("blk.0.ffn_up.weight")!.shape[0] === 192 && !h.tensors.has("blk.0.ffn_gate.weight"));
      for (const contextLength of [undefined, 64, 65, 512]) {
        const long = contextLength !== undefined && contextLength > 64;
        const want = referenceForward(withContextLength(cfg, contextLength), weights, ids).flat();
        for (const source of [dir, file]) {
          const m = await loadModel(rt, source, { contextLength });
          try {
            assert.equal(m.config.maxPositionEmbeddings, contextLength ?? 64);
            const got = logitsOf(m, ids);
            const err = got.reduce((e, v, i) => Math.max(e, Math.abs(v - want[i]!)), 0);
            assert.ok(err <= 1e-4, `${source === dir ? "folder" : "gguf"}, context ${contextLength}: ${err}`);
          } finally { m.dispose(); }
        }
        // The two factor lists give other logits: the test sees which one ran.
        if (long) assert.ok(maxDiff(want, referenceForward(cfg, weights, ids).flat()) > 1e-2);
      }
      await assert.rejects(loadModel(rt, dir, { contextLength: 513 }), /contextLength must be an integer from 1 to 512 \(the model's max_position_embeddings\), got 513/);
      // Past the default context, the error says how to get more.
      const short = await loadModel(rt, dir);
      try { assert.throws(() => short.generate(Array(70).fill(5)), /the prompt has 70 tokens; the model's context is 64 \(load it with contextLength, --context, up to 512\)/); } finally { short.dispose(); }
      // A BF16 Phi folder stays 16-bit as stored (its first linear weight is qkv_proj: there is no q_proj).
      const bfDir = writeModelFolder(phi4, { dtype: "BF16" });
      dirs.push(bfDir);
      const bf = await loadModel(rt, bfDir);
      try { assert.equal(bf.transformer.weightDtype, "bf16"); } finally { bf.dispose(); }
      const r = spawnSync(process.execPath, [cli, "info", "--model", file], { encoding: "utf8" });
      assert.match(r.stdout, /RoPE: theta 10000, on 12 of 16 elements per head, LongRoPE: short factors for a context of 64 \(the long ones past 64, up to 512: --context\), attention factor 1\.22474\n/);
      // Hostile: one list without the other, a list of the wrong length, a factor no divisor can be.
      const withFactors = (edit: (t: Record<string, GGUFTensorToWrite>) => void) => {
        const bytes = readFileSync(file), t: Record<string, GGUFTensorToWrite> = {};
        for (const [name, info] of h.tensors) t[name] = { shape: info.shape, type: info.type as GGMLType, data: bytes.subarray(info.offset, info.offset + info.byteLength) };
        edit(t);
        return writeGGUF(metadataOf(h.metadata), t);
      };
      const f32 = (v: number[]) => ({ shape: [v.length], type: "F32" as GGMLType, data: new Uint8Array(Float32Array.from(v).buffer) });
      const cases: [Uint8Array, RegExp][] = [
        [withFactors((t) => { delete t["rope_factors_short.weight"]; }), /rope_factors_long\.weight and rope_factors_short\.weight come together; the file has one/],
        [withFactors((t) => { t["rope_factors_long.weight"] = f32([1, 2, 3]); }), /rope_factors_long\.weight is F32 \[3\], not the F32 \[6\] of one factor per rotated pair/],
        [withFactors((t) => { t["rope_factors_short.weight"] = f32([1, 1, 0, 1, 1, 1]); }), /rope_factors_short\.weight holds 0 at element 2; each factor must be a finite positive number/],
        [withFactors((t) => { t["rope_factors_long.weight"] = f32([1, 1, Number.NaN, 1, 1, 1]); }), /tensor 'rope_factors_long\.weight' holds a non-finite value at element 2; the file is corrupt/],
        [withFactors((t) => { t["rope_freqs.weight"] = f32([1, 1, 1, 1, 1, 1]); }), /rope_freqs\.weight is not used by a phi3 model/],
      ];
      for (const [bytes, message] of cases) await assert.rejects(loadModel(rt, { "m.gguf": bytes }), message);
    });

    it("partial rotary: written and read for phi3 (rope.dimension_count); in llama-style files, whose permuted q/k rows llama.cpp rotates whole, it is one clear error either way", async () => {
      const partial = parseModelConfig({ ...textModel, hidden_size: 64, intermediate_size: 96, partial_rotary_factor: 0.5 }), weights = randomWeights(partial);
      assert.throws(() => exportGGUF(partial, (n) => weights.get(n)!, { dtype: "f32" }), /partial_rotary_factor \(RoPE on 8 of 16 elements\) is not written for llama \(llama\.cpp's rotates whole heads\)/);
      const whole = parseModelConfig({ ...textModel, hidden_size: 64, intermediate_size: 96 });
      const file = exportGGUF(whole, (n) => weights.get(n)!, { dtype: "f32" }), h = parseGGUFHeader(file);
      const t: Record<string, GGUFTensorToWrite> = {};
      for (const [name, info] of h.tensors) t[name] = { shape: info.shape, type: info.type as GGMLType, data: file.subarray(info.offset, info.offset + info.byteLength) };
      const meta = new Map(h.metadata);
      meta.set("llama.rope.dimension_count", 8);
      await assert.rejects(loadModel(rt, { "m.gguf": writeGGUF(metadataOf(meta), t) }), /llama\.rope\.dimension_count 8 is not the head size 16 \(llama\.cpp's llama rotates whole heads\)/);
      // phi3 (not permuted): the same partial rotary round-trips.
      const phi = parseModelConfig({ ...textModel, model_type: "phi3", hidden_size: 64, intermediate_size: 96, partial_rotary_factor: 0.5 }), pw = randomWeights(phi);
      const m = await loadModel(rt, { "m.gguf": exportGGUF(phi, (n) => pw.get(n)!, { dtype: "f32" }) });
      try { assert.equal(m.config.rotaryDim, 8); } finally { m.dispose(); }
    });

    it("rope_freqs.weight: the forward divides each frequency by the file's factor; a factor that is not F32 [head_dim / 2] of finite positive numbers is one clear error", async () => {
      const cfg = parseModelConfig(llama3), weights = randomWeights(cfg);
      const ids = Array.from({ length: 40 }, (_, i) => (i * 7 + 3) % 250);
      const file = exportGGUF(cfg, (n) => weights.get(n)!, { dtype: "f32" });
      const h = parseGGUFHeader(file);
      assert.deepEqual(h.tensors.get("rope_freqs.weight")?.shape, [8]);
      const onDisk = join(tmp(), "llama3.gguf");
      writeFileSync(onDisk, file);
      assert.match(spawnSync(process.execPath, [cli, "info", "--model", onDisk], { encoding: "utf8" }).stdout, /RoPE: theta 500000, per-frequency factors \(rope_freqs\.weight, read at load\)\n/);
      const scaled = await loadModel(rt, { "m.gguf": file });
      const unscaledCfg = parseModelConfig({ ...llama3, rope_scaling: null });
      const unscaled = await loadModel(rt, { "m.gguf": exportGGUF(unscaledCfg, (n) => weights.get(n)!, { dtype: "f32" }) });
      const want = referenceForward(cfg, weights, ids).flat();
      const got = logitsOf(scaled, ids), plain = logitsOf(unscaled, ids);
      const err = got.reduce((m, v, i) => Math.max(m, Math.abs(v - want[i]!)), 0), moved = maxDiff(got, plain);
      assert.ok(err <= 1e-4, `against the float64 reference with llama3 scaling: ${err}`);
      assert.ok(moved > 100 * err, `the factors change the logits (${moved} vs ${err})`);
      scaled.dispose(); unscaled.dispose();
      // Factors of the file's own (not llama3's): the forward takes them as they are.
      const own = [1, 2, 3, 5, 8, 13, 21, 34];
      const ownCfg = { ...cfg, ropeScaling: { type: "factors" as const, factors: own } };
      const ownModel = await loadModel(rt, { "m.gguf": exportGGUF(ownCfg, (n) => weights.get(n)!, { dtype: "f32" }) });
      const ownWant = referenceForward(ownCfg, weights, ids.slice(0, 20)).flat(), ownGot = logitsOf(ownModel, ids.slice(0, 20));
      assert.ok(ownGot.every((v, i) => Math.abs(v - ownWant[i]!) <= 1e-4), "a file's own factors");
      ownModel.dispose();
      // Hostile: the wrong type or length, or values no divisor can be.
      const tensorsOf = (factors: GGUFTensorToWrite) => {
        const t: Record<string, GGUFTensorToWrite> = {};
        for (const [name, info] of h.tensors) t[name] = { shape: info.shape, type: info.type as GGMLType, data: file.subarray(info.offset, info.offset + info.byteLength) };
        t["rope_freqs.weight"] = factors;
        return writeGGUF(metadataOf(h.metadata), t);
      };
      const f32 = (v: number[]) => ({ shape: [v.length], type: "F32" as GGMLType, data: new Uint8Array(Float32Array.from(v).buffer) });
      const cases: [GGUFTensorToWrite, RegExp][] = [
        [f32([1, 2, 3]), /rope_freqs\.weight is F32 \[3\], not the F32 \[8\] of one factor per rotated pair/],
        [{ shape: [8], type: "F16", data: new Uint8Array(16) }, /rope_freqs\.weight is F16 \[8\], not the F32 \[8\]/],
        [f32([1, 1, 0, 1, 1, 1, 1, 1]), /rope_freqs\.weight holds 0 at element 2; each factor must be a finite positive number/],
        [f32([1, 1, 1, -4, 1, 1, 1, 1]), /rope_freqs\.weight holds -4 at element 3/],
        [f32([1, 1, 1, 1, NaN, 1, 1, 1]), /tensor 'rope_freqs\.weight' holds a non-finite value at element 4/],
      ];
      const held = () => rt.stats().persistentLiveBytes - rt.stats().scratchReservedBytes, before = held();
      for (const [factors, message] of cases) {
        await assert.rejects(loadModel(rt, { "bad.gguf": tensorsOf(factors) }), (e: Error) => e.name === "ModelConfigError" && message.test(e.message) && !e.message.includes("\n"));
      }
      assert.equal(held(), before, "a refused file leaves nothing allocated");
    });

    it("a layer tensor the metadata's architecture does not use is refused, not ignored (a qwen3 file labelled qwen2)", async () => {
      const cfg = parseModelConfig({ ...textModel, model_type: "qwen3", hidden_size: 64, intermediate_size: 96 }), weights = randomWeights(cfg);
      const file = exportGGUF(cfg, (n) => weights.get(n)!, { dtype: "f32" });
      const h = parseGGUFHeader(file);
      const meta = metadataOf(new Map([...h.metadata].map(([k, v]) => [k.replace(/^qwen3\./, "qwen2."), k === "general.architecture" ? "qwen2" : v])));
      const tensors = Object.fromEntries([...h.tensors].map(([n, t]) => [n, { shape: t.shape, type: t.type as GGMLType, data: file.subarray(t.offset, t.offset + t.byteLength) }]));
      await assert.rejects(loadModel(rt, { "m.gguf": writeGGUF(meta, tensors) }), /m\.gguf: tensor blk\.0\.attn_[qk]_norm\.weight is not one a qwen2 model of this metadata uses$/);
    });

    it("tokens named like Object.prototype's properties (constructor, __proto__, toString) are ordinary tokens", async () => {
      const { ggufTokenizer } = await import("../src/model/gguf-model.ts");
      const { TextTokenizer } = await import("../src/model/tokenizer.ts");
      const tokens = ["c", "o", "n", "s", "t", "r", "u", "_", "p", "constructor", "__proto__", "toString", "S", "i", "g"];
      const built = ggufTokenizer(new Map<string, never>([["tokenizer.ggml.model", "gpt2" as never], ["tokenizer.ggml.tokens", tokens as never], ["tokenizer.ggml.merges", [] as never], ["tokenizer.ggml.pre", "gpt-2" as never]]), "x.gguf")!;
      const vocab = (built.json.model as { vocab: Record<string, number> }).vocab;
      assert.deepEqual([vocab.constructor, vocab.__proto__, vocab.toString], [9, 10, 11]);
      assert.deepEqual(Object.keys(JSON.parse(JSON.stringify(vocab))).length, tokens.length);
      assert.ok(new TextTokenizer(built.json, built.config));
    });

    it("a SentencePiece tokenizer (scores as merges, byte fallback, BOS) encodes as its tokenizer.json", async () => {
      const dir = writeModelFolder({ ...textModel, hidden_size: 64, intermediate_size: 96, vocab_size: SENTENCEPIECE_VOCAB, bos_token_id: 1, eos_token_id: 2 });
      dirs.push(dir);
      writeSentencePieceTokenizer(dir);
      const file = join(tmp(), "spm.gguf");
      writeFileSync(file, await folderToGGUF(dir, { dtype: "q8_0" }));
      const [a, b] = [await loadModel(rt, dir), await loadModel(rt, file)];
      for (const t of ["Hello world", "Hello  wörld 🙂", "wHere", ""]) assert.deepEqual(b.encode(t), a.encode(t), t);
      assert.deepEqual(b.defaults.eosTokenIds, [2]);
      a.dispose(); b.dispose();
    });

    it("stop tokens: the file's eos / eot / eom ids and the tokens llama.cpp ends a generation at by their text (Gemma's <end_of_turn> beside its <eos>)", async () => {
      const { ggufStopTokenIds } = await import("../src/model/gguf-model.ts");
      const meta = (tokens: string[], ids: Record<string, number>) => new Map<string, GGUFValue>([["tokenizer.ggml.tokens", tokens], ...Object.entries(ids).map(([k, v]) => [`tokenizer.ggml.${k}`, v] as [string, GGUFValue])]);
      assert.deepEqual(ggufStopTokenIds(meta(["<pad>", "<eos>", "<bos>", "a", "<start_of_turn>", "<end_of_turn>"], { eos_token_id: 1, bos_token_id: 2 })), [1, 5]);
      assert.deepEqual(ggufStopTokenIds(meta(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "x"], { eos_token_id: 2 })), [0, 2]);
      assert.deepEqual(ggufStopTokenIds(meta(["<|eot_id|>", "<|end_of_text|>", "<|eom_id|>", "y"], { eos_token_id: 1, eot_token_id: 0, eom_token_id: 2 })), [0, 1, 2]);
      // Harmony (gpt-oss): <|end|> ends a message, not the generation, beside <|return|> and <|call|>.
      assert.deepEqual(ggufStopTokenIds(meta(["<|end|>", "<|return|>", "<|call|>"], {})), [1, 2]);
      assert.deepEqual(ggufStopTokenIds(meta(["a", "b"], { eos_token_id: 7 })), [], "an id past the vocabulary is no stop token");
    });

    it("a SentencePiece tokenizer without a space prefix (Gemma's: add_space_prefix false) encodes and decodes as its tokenizer.json", async () => {
      const dir = writeModelFolder({ ...textModel, hidden_size: 64, intermediate_size: 96, vocab_size: SENTENCEPIECE_VOCAB, bos_token_id: 1, eos_token_id: 2 });
      dirs.push(dir);
      writeSentencePieceTokenizer(dir, { spacePrefix: false });
      const bytes = await folderToGGUF(dir, { dtype: "q8_0" });
      assert.equal(parseGGUFHeader(bytes, bytes.length).metadata.get("tokenizer.ggml.add_space_prefix"), false);
      const file = join(tmp(), "spm.gguf");
      writeFileSync(file, bytes);
      const [a, b] = [await loadModel(rt, dir), await loadModel(rt, file)];
      for (const t of ["Hello world", " Hello  wörld 🙂", "wHere", ""]) {
        assert.deepEqual(b.encode(t), a.encode(t), t);
        assert.equal(b.tokenizer!.decode(b.encode(t), { skipSpecialTokens: true }), t, `${t}: round trip`);
      }
      assert.notDeepEqual(a.encode("Hello"), a.encode(" Hello"), "no ▁ is prepended");
      a.dispose(); b.dispose();
    });

    it("in memory, over http(s) and split into -0000i-of-0000N.gguf files it loads the same model", async () => {
      const dir = writeModelFolder(models[0]![1]);
      dirs.push(dir);
      writeTokenizer(dir);
      const bytes = await folderToGGUF(dir, { dtype: "q8_0" });
      const file = join(tmp(), "m.gguf");
      writeFileSync(file, bytes);
      const ref = await loadModel(rt, file);
      const ids = ref.encode("the theme");
      const want = logitsOf(ref, ids);
      const fromMemory = await loadModel(rt, { "m.gguf": bytes });
      assert.deepEqual(logitsOf(fromMemory, ids), want);
      const server = createServer((req, res) => { if (req.url === "/models/m.gguf") res.writeHead(200).end(bytes); else res.writeHead(404).end(); });
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      try {
        const fromUrl = await loadModel(rt, `http://127.0.0.1:${(server.address() as { port: number }).port}/models/m.gguf`);
        assert.deepEqual(logitsOf(fromUrl, ids), want);
      } finally { server.close(); }
      // Splits: the same tensors over two files, metadata in the first.
      const h = parseGGUFHeader(bytes, bytes.length);
      const names = [...h.tensors.keys()];
      const half = Math.ceil(names.length / 2);
      const part = (list: string[]) => Object.fromEntries(list.map((n) => { const t = h.tensors.get(n)!; return [n, { shape: t.shape, type: t.type, data: bytes.subarray(t.offset, t.offset + t.byteLength) }]; }));
      const meta = (no: number) => ({ "split.no": { type: "u32" as const, value: no }, "split.count": { type: "u32" as const, value: 2 } });
      const first = writeGGUF({ ...metadataOf(h.metadata), ...meta(0) }, part(names.slice(0, half)));
      const second = writeGGUF(meta(1), part(names.slice(half)));
      const splitDir = tmp();
      writeFileSync(join(splitDir, "m-00001-of-00002.gguf"), first);
      writeFileSync(join(splitDir, "m-00002-of-00002.gguf"), second);
      const split = await loadModel(rt, join(splitDir, "m-00001-of-00002.gguf"));
      assert.deepEqual(logitsOf(split, ids), want);
      rmSync(join(splitDir, "m-00002-of-00002.gguf"));
      await assert.rejects(loadModel(rt, join(splitDir, "m-00001-of-00002.gguf")), /m-00002-of-00002\.gguf: cannot open \(no such file\)/);
      for (const m of [ref, fromMemory, split]) m.dispose();
    });

    it("a NaN block scale in a Q5_0 / Q5_1 / Q5_K / Q6_K tensor, unpacked at load, is one clear error naming the tensor and the block; the runtime stays usable", async () => {
      const config = { ...base, model_type: "llama", num_key_value_heads: 2, hidden_size: 256, intermediate_size: 256, vocab_size: 256 };
      const cfg = parseModelConfig(config), weights = randomWeights(cfg);
      for (const [dtype, blockBytes, dAt] of [["q5_0", 22, 0], ["q5_1", 24, 2], ["q5_k", 176, 0], ["q6_k", 210, 208]] as const) {
        const file = exportGGUF(cfg, (n) => weights.get(n)!, { dtype });
        const t = parseGGUFHeader(file, file.length).tensors.get("blk.0.ffn_up.weight")!;
        const bad = file.slice();
        bad[t.offset + 3 * blockBytes + dAt] = 0x00; bad[t.offset + 3 * blockBytes + dAt + 1] = 0x7e; // f16 NaN in block 3
        await assert.rejects(loadModel(rt, { "bad.gguf": bad }), { name: "ModelConfigError", message: /tensor 'blk\.0\.ffn_up\.weight' holds a non-finite scale in block 3; the file is corrupt/ }, dtype);
        const good = await loadModel(rt, { "good.gguf": file });
        assert.equal(good.transformer.weightDtype, `${dtype}_u8`);
        assert.equal((await good.generate([1, 2, 3], { maxNewTokens: 2, temperature: 0, stopTokens: [] }).done).tokens.length, 2);
        good.dispose();
      }
    });

    it("types not kept as stored (Q5_0, Q5_1, Q5_K, Q6_K by default) are converted at load (Q6_K, Q5_K, Q5_0 and Q5_1 to their bytes unpacked, *_U8; IQ4_XS to IQ4_NL; the others to Q8_0), within those formats' error of their values, beside Q4_1, IQ4_NL, Q2_K, Q3_K and Q4_K kept as they are", async () => {
      const config = { ...base, model_type: "qwen2", num_key_value_heads: 2, hidden_size: 256, intermediate_size: 256, vocab_size: 256 };
      const cfg = parseModelConfig(config);
      const weights = randomWeights(cfg);
      const f32 = exportGGUF(cfg, (n) => weights.get(n)!, { dtype: "f32" });
      const h = parseGGUFHeader(f32, f32.length);
      const types: GGMLType[] = ["Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K", "Q2_K", "Q3_K", "IQ4_NL", "IQ4_XS"];
      // Random blocks of each type, with finite small scales; the reference runs on their dequantized values.
      const { file, values } = withRandomBlocks(f32, (i) => types[i % types.length]!);
      const fh = parseGGUFHeader(file, file.length);
      const tensors = Object.fromEntries([...fh.tensors].map(([n, t]) => [n, { shape: t.shape, data: values.get(n) ?? new Float32Array(file.slice(t.offset, t.offset + t.byteLength).buffer) }]));
      const exact = await loadModel(rt, { "exact.gguf": writeGGUF(metadataOf(fh.metadata), Object.fromEntries(Object.entries(tensors).map(([n, t]) => [n, { shape: t.shape, type: "F32" as const, data: new Uint8Array(t.data.buffer) }]))) });
      const ids = [1, 5, 200, 17, 3], b = logitsOf(exact, ids), scale = Math.max(...Array.from(b, Math.abs));
      for (const build of BUILDS) {
        const mixed = await loadModel(await runtimeFor(build), { "mixed.gguf": file });
        assert.equal(mixed.transformer.weightDtype, "q6_k_u8"); // the type of the most bytes (Q6_K), converted
        // Measured 0.0497 (simd) and 0.0502 (relaxed: x quantized per 256 for the K-quants, as llama.cpp's Q8_K) of max |logit|.
        const a = logitsOf(mixed, ids);
        assert.ok(maxDiff(a, b) <= 0.06 * scale, `${build}: max |Δlogit| ${maxDiff(a, b)} vs max |logit| ${scale}`);
        mixed.dispose();
      }
      exact.dispose();
    });

    it("a folder is written as GGUF as it streams in (a few MiB of rows at a time, q/k rows to their permuted places, two shards, a tied head): the bytes exportGGUF writes from whole tensors; the CLI writes them to the file, a NaN is one line and no file", async function () {
      this.timeout(120_000);
      // q_proj 1152 x 1152 f32 (5.3 MB) and the embedding 4096 x 1152 (18.9 MB): several row groups each.
      const config = { ...textModel, hidden_size: 1152, num_attention_heads: 9, num_key_value_heads: 3, intermediate_size: 256, num_hidden_layers: 1, vocab_size: 4096, tie_word_embeddings: true };
      const cfg = parseModelConfig(config), weights = randomWeights(cfg);
      const dir = writeModelFolder(config, { weights, shards: 2 });
      dirs.push(dir);
      writeTokenizer(dir);
      const tokenizer = { json: JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8")), config: JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8")) };
      for (const dtype of ["q4_k_m", "bf16"] as const) {
        const streamed = await folderToGGUF(dir, { dtype }), whole = exportGGUF(cfg, (n) => weights.get(n)!, { dtype, tokenizer });
        assert.equal(streamed.length, whole.length, dtype);
        assert.equal(Buffer.compare(streamed, whole), 0, `${dtype}: the streamed file's bytes differ`);
      }
      const out = join(tmp(), "m.gguf");
      const q = spawnSync(process.execPath, [cli, "quantize", "--model", dir, "--dtype", "q8_0", "--out", out], { encoding: "utf8", timeout: 60_000 });
      assert.equal(q.status, 0, q.stderr);
      assert.equal(Buffer.compare(readFileSync(out), exportGGUF(cfg, (n) => weights.get(n)!, { dtype: "q8_0", name: dir.split("/").pop(), tokenizer })), 0);
      // A NaN late in the embedding (past its first row groups).
      const bad = new Map(weights);
      bad.set("model.embed_tokens.weight", weights.get("model.embed_tokens.weight")!.map((v, i) => (i === 3000 * 1152 + 7 ? NaN : v)));
      const badDir = writeModelFolder(config, { weights: bad });
      dirs.push(badDir);
      const badOut = join(tmp(), "bad.gguf");
      const r = spawnSync(process.execPath, [cli, "quantize", "--model", badDir, "--dtype", "q8_0", "--out", badOut], { encoding: "utf8", timeout: 60_000 });
      assert.equal(r.status, 1);
      assert.match(r.stderr, /^gqa-wasm: .*model\.safetensors: tensor 'model\.embed_tokens\.weight' holds a non-finite value \(NaN or infinity\) at element 3456007; the checkpoint is corrupt\n$/);
      assert.throws(() => readFileSync(badOut), /ENOENT/);
    });

    it("Q4_K, Q5_K, Q6_K, Q5_0, Q5_1 and IQ4_NL files are computed on as stored (Q5_K, Q6_K, Q5_0, Q5_1 when asked; by default they load a byte a weight, Q5_K_U8, Q6_K_U8, Q5_0_U8, Q5_1_U8, with the same logits): their logits are the folder's quantized at load to the same blocks, in the format's bytes; rows that are not whole super-blocks are one clear error", async () => {
      const config = { ...textModel, hidden_size: 256, intermediate_size: 512, num_attention_heads: 4, num_key_value_heads: 2 };
      const dir = writeModelFolder(config);
      dirs.push(dir);
      writeTokenizer(dir);
      const ids = [1, 5, 200, 17, 3, 99];
      const held = () => rt.stats().persistentLiveBytes - rt.stats().scratchReservedBytes;
      const f32Start = held(), f32 = await loadModel(rt, dir), f32Bytes = held() - f32Start;
      const want = logitsOf(f32, ids), scale = Math.max(...Array.from(want, Math.abs));
      for (const [dtype, bytesPerWeight, bound] of [["q4_k", 144 / 256, 0.9], ["q5_k", 176 / 256, 0.6], ["q6_k", 210 / 256, 0.35], ["q5_0", 22 / 32, 0.6], ["q5_1", 24 / 32, 0.6], ["iq4_nl", 18 / 32, 0.9]] as const) {
        const file = join(tmp(), `${dtype}.gguf`);
        writeFileSync(file, await folderToGGUF(dir, { dtype }));
        // Q6_K, Q5_K, Q5_0 and Q5_1 are kept as stored when asked (by default their bytes unpacked,
        // *_U8: the same values, computed to the same bits).
        const asked = dtype === "q6_k" || dtype === "q5_k" || dtype === "q5_0" || dtype === "q5_1";
        const start = held(), gguf = await loadModel(rt, file, asked ? { dtype } : {}), bytes = held() - start;
        if (asked) {
          const defaultStart = held(), byDefault = await loadModel(rt, file), defaultBytes = held() - defaultStart;
          assert.equal(byDefault.transformer.weightDtype, `${dtype}_u8`);
          assert.deepEqual(logitsOf(byDefault, ids), logitsOf(gguf, ids));
          if (dtype === "q5_0" || dtype === "q5_1") {
            const perWeight = dtype === "q5_0" ? 34 / 32 : 36 / 32;
            assert.ok(defaultBytes < f32Bytes * (perWeight / 4) * 1.1, `${dtype}_u8: ${defaultBytes} bytes of weights, ${perWeight} a weight`);
          }
          byDefault.dispose();
        }
        assert.equal(gguf.transformer.weightDtype, dtype);
        // Norms stay f32 and buffers are 64-byte aligned: a little over the format's bytes.
        assert.ok(bytes < f32Bytes * (bytesPerWeight / 4) * 1.1, `${dtype}: ${bytes} bytes of weights (f32: ${f32Bytes})`);
        const got = logitsOf(gguf, ids);
        const atLoad = await loadModel(rt, dir, { dtype });
        assert.deepEqual(got, logitsOf(atLoad, ids), `${dtype}: the file's blocks are the ones quantizing at load makes`);
        // Random uniform weights at 4 and 6 bits (min/max scales): measured 0.59 / 0.20 of max |logit|
        // (Q8_0 0.05, Q4_0 0.41, bf16 0.03 on this model).
        assert.ok(maxDiff(got, want) <= bound * scale, `${dtype}: max |Δlogit| ${maxDiff(got, want)} vs max |logit| ${scale}`);
        assert.equal((await gguf.generate(ids, { maxNewTokens: 4, temperature: 0, stopTokens: [] }).done).tokens.length, 4);
        for (const m of [gguf, atLoad]) m.dispose();
      }
      // llama.cpp's Q4_K_M mix (`gqa-wasm quantize --dtype q4_k_m`): the types q4kmTensorType picks, read as stored.
      const mixFile = join(tmp(), "q4km.gguf");
      const q = spawnSync(process.execPath, [cli, "quantize", "--model", dir, "--dtype", "q4_k_m", "--out", mixFile], { encoding: "utf8", timeout: 60_000 });
      assert.equal(q.status, 0, q.stderr);
      assert.match(q.stderr, /q4_k_m weights/);
      const described = spawnSync(process.execPath, [cli, "info", "--model", mixFile], { encoding: "utf8", timeout: 60_000 });
      assert.match(described.stdout, /GGUF tensor types: .*Q6_K x\d+.*; converted at load: Q6_K x\d+ to Q6_K_U8 \(--dtype to choose\)/);
      const mixBytes = readFileSync(mixFile), header = parseGGUFHeader(mixBytes, mixBytes.length);
      const types = new Map([...header.tensors.values()].map((t) => [t.name, t.type]));
      assert.equal(header.metadata.get("general.file_type"), 15);
      assert.equal(types.get("blk.0.attn_q.weight"), "Q4_K");
      assert.equal(types.get("blk.0.attn_v.weight"), "Q4_K");
      assert.equal(types.get("blk.1.attn_v.weight"), "Q6_K"); // of 2 layers, the last (the last eighth) gets more bits
      assert.equal(types.get("blk.1.ffn_down.weight"), "Q6_K");
      assert.equal(types.get("output.weight"), "Q6_K");
      assert.equal(types.get("output_norm.weight"), "F32");
      const beforeMix = held(), mix = await loadModel(rt, mixFile), mixHeld = held() - beforeMix;
      assert.equal(mix.transformer.weightDtype, "q4_k");
      assert.ok(maxDiff(logitsOf(mix, ids), want) <= 0.9 * scale);
      // dtype "stored": the Q6_K matrices stay Q6_K too (210 bytes per 256 weights where Q6_K_U8
      // takes 274), computed on as stored: fewer bytes, the same logits.
      const beforeStored = held(), stored = await loadModel(rt, mixFile, { dtype: "stored" }), storedHeld = held() - beforeStored;
      assert.equal(stored.transformer.weightDtype, "q4_k");
      const q6Weights = [...header.tensors.values()].filter((t) => t.type === "Q6_K").reduce((n, t) => n + t.shape[0]! * t.shape[1]!, 0);
      assert.ok(q6Weights > 0);
      assert.ok(Math.abs(mixHeld - storedHeld - q6Weights * (274 / 256 - 210 / 256)) <= 64 * header.tensors.size, `${mixHeld} - ${storedHeld} bytes vs ${q6Weights} Q6_K weights`);
      assert.deepEqual(logitsOf(stored, ids), logitsOf(mix, ids));
      stored.dispose();
      // llama.cpp's Q5_K_M mix: Q5_K where the Q4_K_M mix has Q4_K (file type 17), its Q5_K
      // computed on as stored with dtype "stored" (by default its bytes unpacked, Q5_K_U8: the same logits).
      const q5File = join(tmp(), "q5km.gguf");
      const q5 = spawnSync(process.execPath, [cli, "quantize", "--model", dir, "--dtype", "q5_k_m", "--out", q5File], { encoding: "utf8", timeout: 60_000 });
      assert.equal(q5.status, 0, q5.stderr);
      const q5Bytes = readFileSync(q5File), q5Header = parseGGUFHeader(q5Bytes, q5Bytes.length);
      assert.equal(q5Header.metadata.get("general.file_type"), 17);
      for (const [name, t] of header.tensors) assert.equal(q5Header.tensors.get(name)!.type, t.type === "Q4_K" ? "Q5_K" : t.type, name);
      const q5Stored = await loadModel(rt, q5File, { dtype: "stored" }), q5Default = await loadModel(rt, q5File);
      assert.equal(q5Stored.transformer.weightDtype, "q5_k");
      assert.equal(q5Default.transformer.weightDtype, "q5_k_u8");
      assert.ok(maxDiff(logitsOf(q5Stored, ids), want) <= 0.6 * scale);
      assert.deepEqual(logitsOf(q5Default, ids), logitsOf(q5Stored, ids));
      q5Stored.dispose(); q5Default.dispose();
      // The same mix at load from the folder (`--dtype q4_k_m`): each matrix in its type (Q6_K as
      // Q6_K_U8, as the file loads), the bytes those types take, logits near the file's.
      const before = held(), atLoad = await loadModel(rt, dir, { dtype: "q4_k_m" }), atLoadBytes = held() - before;
      assert.equal(atLoad.transformer.weightDtype, "q4_k_m");
      const cfg = parseModelConfig(config);
      let expected = 0;
      for (const [name, shape] of expectedTensors(cfg)) {
        if (shape.length !== 2) continue;
        const d = weightDtypeOf("q4_k_m", name, shape[1]!, cfg);
        expected += shape[0]! * quantRowBytes(d as QuantDtype, shape[1]!);
      }
      assert.ok(atLoadBytes >= expected && atLoadBytes < expected * 1.1, `${atLoadBytes} bytes of weights, the mix's types ${expected}`);
      const fromFile = await loadModel(rt, mixFile), fileLogits = logitsOf(fromFile, ids), loadLogits = logitsOf(atLoad, ids);
      assert.ok(maxDiff(loadLogits, fileLogits) <= 0.05 * scale, `at load vs the file: ${maxDiff(loadLogits, fileLogits)}`);
      for (const m of [mix, atLoad, fromFile]) m.dispose();
      f32.dispose();
      const small = writeModelFolder(models[0]![1]); // hidden 64: rows of 64 weights
      dirs.push(small);
      await assert.rejects(loadModel(rt, small, { dtype: "q4_k" }), /model\.embed_tokens\.weight has rows of 64 weights, not whole q4_k super-blocks of 256 \(use q8_0 or q4_0 for this model\)/);
    });

    it("`gqa-wasm quantize` writes a GGUF that `info`, `run` and `generate` read; hostile GGUF files are one line", () => {
      const dir = writeModelFolder(models[0]![1]);
      dirs.push(dir);
      writeTokenizer(dir);
      const out = join(tmp(), "q.gguf");
      const q = spawnSync(process.execPath, [cli, "quantize", "--model", dir, "--dtype", "q4_0", "--out", out], { encoding: "utf8", timeout: 60_000 });
      assert.equal(q.status, 0, q.stderr);
      assert.match(q.stderr, /wrote .*q\.gguf: .*, q4_0 weights/);
      const info = spawnSync(process.execPath, [cli, "info", "--model", out], { encoding: "utf8" });
      assert.match(info.stdout, /GGUF tensor types: Q4_0 x\d+, F32 x\d+ \(computed on as stored\)\nGGUF name: .*; tokenizer: gpt2, \d+ tokens, with a chat template\n/);
      const gen = spawnSync(process.execPath, [cli, "run", "--model", out, "--prompt", "the theme", "--max-new-tokens", "4", "--temperature", "0"], { encoding: "utf8" });
      assert.equal(gen.status, 0, gen.stderr);
      assert.match(gen.stderr, /\(llama, q4_0 weights/);
      const broken = join(tmp(), "broken.gguf");
      const bytes = readFileSync(out);
      writeFileSync(broken, bytes.subarray(0, 200));
      const bad = spawnSync(process.execPath, [cli, "generate", "--model", broken, "--tokens", "1"], { encoding: "utf8" });
      assert.equal(bad.status, 1);
      assert.match(bad.stderr, /^gqa-wasm: .*broken\.gguf: /);
      assert.doesNotMatch(bad.stderr, /\n\s+at /);
    });
  });
});

/** Metadata of a parsed header in the writer's form (what the tests copy into new files). */
