// Block-quantized weights (Q8_0, Q4_0 in GGUF's layouts): the host's quantizer against ggml's
// reference rules, the kernels against a float64 emulation of the arithmetic they promise
// (weights' blocks times activations quantized per block of 32, as llama.cpp computes), the
// error that activation quantization adds against the exact product, thread splits, and models.
import assert from "node:assert/strict";
import { createRuntime, loadModel, syntheticModelFiles, type Runtime } from "../src/index.ts";
import { f16ToF32 } from "../src/formats/half.ts";
import { dequantizeRows, fiveBitToU8, IQ4_LEVELS, q5kToU8, q6kToU8, QUANT_BLOCK_WEIGHTS, quantizeRows, quantRowBytes, type QuantDtype } from "../src/formats/quant.ts";
import { CODES, WEIGHT_FORMATS } from "../src/runtime/kernel-exports.ts";
import { BUILDS, randomArray, runtimeFor } from "./helpers.ts";

const DTYPES: QuantDtype[] = ["q8_0", "q4_0", "q5_0", "q4_1", "q5_1", "iq4_nl", "q5_0_u8", "q5_1_u8"];
const ALL_DTYPES: QuantDtype[] = [...DTYPES, "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q6_k_u8", "q5_k_u8"];

/** Activations quantized as the kernels do: per block of 32, d = max|x| / 127 (f32), q = round(x / d). */
/** x quantized per block of `block` (32; 256: the relaxed build's activation super-blocks for the K-quants): d = max|x| / 127, q = round(x / d) half away from zero. */
function quantizeActivations(x: Float32Array, K: number, block = 32): { q: Int8Array; d: Float32Array } {
  const rows = x.length / K, nb = Math.ceil(K / block);
  const q = new Int8Array(rows * nb * block), d = new Float32Array(rows * nb);
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < nb; b++) {
      let amax = 0;
      for (let j = 0; j < block && b * block + j < K; j++) amax = Math.max(amax, Math.abs(x[r * K + b * block + j]!));
      const scale = Math.fround(amax / 127), id = scale ? Math.fround(1 / scale) : 0;
      d[r * nb + b] = scale;
      for (let j = 0; j < block && b * block + j < K; j++) {
        const v = Math.fround(x[r * K + b * block + j]! * id);
        q[(r * nb + b) * block + j] = v >= 0 ? Math.floor(v + 0.5) : -Math.floor(-v + 0.5);
      }
    }
  }
  return { q, d };
}

/** y = x · Wᵀ in float64 as llama.cpp defines it for these formats: Σ_blocks d_w · d_x · Σ q_w · q_x (Q4_1, Q5_1: + m_w · d_x · Σ q_x). */
function emulate(dtype: QuantDtype, x: Float32Array, w: Uint8Array, M: number, N: number, K: number): Float64Array {
  const nb = Math.ceil(K / 32), bb = quantRowBytes(dtype, 32);
  const { q, d } = quantizeActivations(x, K);
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let acc = 0;
      for (let b = 0; b < nb; b++) {
        const at = (n * nb + b) * bb, dw = f16ToF32(w[at]! | (w[at + 1]! << 8));
        let s = 0;
        if (dtype === "q4_1" || dtype === "q5_1" || dtype === "q5_1_u8") {
          const mw = f16ToF32(w[at + 2]! | (w[at + 3]! << 8)), qs = at + (dtype === "q4_1" ? 4 : 8);
          const qh = dtype === "q5_1" ? (w[at + 4]! | (w[at + 5]! << 8) | (w[at + 6]! << 16) | (w[at + 7]! << 24)) >>> 0 : 0;
          let sx = 0;
          for (let j = 0; j < 32; j++) {
            const qw = dtype === "q5_1_u8" ? w[at + 4 + j]! : (j < 16 ? w[qs + j]! & 15 : w[qs + j - 16]! >> 4) | (((qh >>> j) & 1) << 4), qx = q[(m * nb + b) * 32 + j]!;
            s += qw * qx; sx += qx;
          }
          acc += dw * d[m * nb + b]! * s + mw * d[m * nb + b]! * sx;
          continue;
        }
        for (let j = 0; j < 32; j++) {
          const qw = dtype === "q8_0" ? (w[at + 2 + j]! << 24) >> 24
            : dtype === "q5_0_u8" ? w[at + 2 + j]! - 16
            : dtype === "iq4_nl" ? IQ4_LEVELS[j < 16 ? w[at + 2 + j]! & 15 : w[at + 2 + j - 16]! >> 4]!
            : dtype === "q5_0" ? ((j < 16 ? w[at + 6 + j]! & 15 : w[at + 6 + j - 16]! >> 4) | ((((w[at + 2]! | (w[at + 3]! << 8) | (w[at + 4]! << 16) | (w[at + 5]! << 24)) >>> j) & 1) << 4)) - 16
            : (j < 16 ? w[at + 2 + j]! & 15 : w[at + 2 + j - 16]! >> 4) - 8;
          s += qw * q[(m * nb + b) * 32 + j]!;
        }
        acc += dw * d[m * nb + b]! * s;
      }
      y[m * N + n] = acc;
    }
  }
  return y;
}

/**
 * A call of M x N x K with a bias (weights and x seeded by shape) against x in f64 times the
 * stored weights (what the kernels' f32 panels compute): f32 sums of K products, far inside the
 * activation quantization's error (~max|x|/254 per weight).
 */
function checkExactProduct(rt: Runtime, dtype: QuantDtype, M: number, N: number, K: number): void {
  const w = randomArray(N * K, 31 + K), x = randomArray(M * K, 32 + M), bias = randomArray(N, 33);
  const wb = rt.upload(w, dtype, K), xb = rt.upload(x), bb = rt.upload(bias), yb = rt.alloc(M * N);
  try {
    rt.linearInto({ x: xb, weight: wb, bias: bb, out: yb, inFeatures: K, outFeatures: N });
    const stored = wb.toFloat32Array();
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let exact = bias[n]!, magnitude = Math.abs(bias[n]!);
        for (let k = 0; k < K; k++) { exact += x[m * K + k]! * stored[n * K + k]!; magnitude += Math.abs(x[m * K + k]! * stored[n * K + k]!); }
        const got = yb.array[m * N + n]!;
        assert.ok(Math.abs(got - exact) <= 1e-5 * magnitude, `${M}x${N}x${K} (${m}, ${n}): ${got} vs ${exact}`);
      }
    }
  } finally { for (const b of [wb, xb, bb, yb]) b.free(); }
}

const blocksOf = (rt: Runtime, b: { ptr: number; byteLength: number }) => new Uint8Array(rt.memory.memory.buffer, b.ptr, b.byteLength).slice();

describe("block-quantized weights: the formats", () => {
  it("Q8_0 quantizes as ggml: d = max|x| / 127 stored as f16, q = round(x / d) half away from zero", () => {
    const x = Float32Array.from({ length: 32 }, (_, i) => (i - 16) / 8); // -2 .. 1.875
    const out = new Uint8Array(34);
    quantizeRows("q8_0", x, 32, out);
    const d = f16ToF32(out[0]! | (out[1]! << 8));
    assert.ok(Math.abs(d - 2 / 127) <= 2 / 127 / 2048, "the f16 nearest 2/127");
    const q = Array.from(new Int8Array(out.buffer, 2, 32));
    assert.equal(q[0], -127);
    assert.deepEqual(q, Array.from(x, (v) => { const t = Math.fround(v * Math.fround(1 / Math.fround(2 / 127))); return t >= 0 ? Math.floor(t + 0.5) : -Math.floor(-t + 0.5); }));
    // A block of zeros has d = 0 and q = 0.
    quantizeRows("q8_0", new Float32Array(32), 32, out);
    assert.deepEqual([...out], new Array(34).fill(0));
  });

  it("Q4_0 quantizes as ggml: d = (the x of largest |x|) / -8, q = min(15, trunc(x / d + 8.5)), nibbles j and j+16 share byte j", () => {
    const x = new Float32Array(32);
    x[0] = -4; x[16] = 4; x[1] = 1; x[17] = -0.25;
    const out = new Uint8Array(18);
    quantizeRows("q4_0", x, 32, out);
    assert.equal(f16ToF32(out[0]! | (out[1]! << 8)), 0.5); // -4 / -8
    // x / d + 8.5: -4 -> 0.5 -> 0; 4 -> 16.5 -> 15 (clamped); 1 -> 10.5 -> 10; -0.25 -> 8; 0 -> 8
    assert.equal(out[2], 0 | (15 << 4));
    assert.equal(out[3], 10 | (8 << 4));
    assert.equal(out[4], 8 | (8 << 4));
    assert.deepEqual(Array.from(dequantizeRows("q4_0", out, 32).subarray(0, 2)), [-4, 1]);
    assert.equal(dequantizeRows("q4_0", out, 32)[16], 3.5, "the largest positive value is 7·d");
  });

  it("Q5_0 quantizes as ggml (d = the x of largest |x| / -16, q = min(31, trunc(x / d + 16.5)), bit 4 of weight j in bit j of qh), and ggml's reference dequantizer reads the rows back as ours does", async () => {
    const x = new Float32Array(32);
    x[0] = -4; x[16] = 4; x[1] = 1; x[17] = -0.25;
    const out = new Uint8Array(22);
    quantizeRows("q5_0", x, 32, out);
    assert.equal(f16ToF32(out[0]! | (out[1]! << 8)), 0.25); // -4 / -16
    // x / d + 16.5: -4 -> 0.5 -> 0; 4 -> 32.5 -> 31 (clamped); 1 -> 20.5 -> 20; -0.25 -> 15.5 -> 15; 0 -> 16
    const qh = out[2]! | (out[3]! << 8) | (out[4]! << 16) | (out[5]! << 24);
    assert.equal(out[6], 0 | (15 << 4)); // weights 0 and 16: low nibbles 0 and 15 (31 & 15)
    assert.equal(out[7], 4 | (15 << 4)); // weights 1 (20 & 15) and 17 (15)
    assert.equal((qh >>> 0) & 1, 0); assert.equal((qh >>> 16) & 1, 1); assert.equal((qh >>> 1) & 1, 1); assert.equal((qh >>> 17) & 1, 0);
    assert.equal((qh >>> 2) & 1, 1); // weight 2 is 0: q = 16
    const { dequantizeGGML } = await import("../src/formats/quant.ts");
    const K = 96, y = randomArray(4 * K, 17), rows = new Uint8Array(4 * quantRowBytes("q5_0", K));
    quantizeRows("q5_0", y, K, rows);
    assert.deepEqual(dequantizeRows("q5_0", rows, K), dequantizeGGML("Q5_0", rows, y.length));
  });

  it("IQ4_NL quantizes as ggml: each nibble the nearest of the 16 levels under the block's f16 scale, which a least-squares search picks (no worse than max|x| / 127)", () => {
    const x = randomArray(32 * 64, 5), out = new Uint8Array(18 * 64);
    quantizeRows("iq4_nl", x, 32, out);
    const back = dequantizeRows("iq4_nl", out, 32);
    for (let b = 0; b < 64; b++) {
      const xs = x.subarray(32 * b, 32 * b + 32), d = f16ToF32(out[18 * b]! | (out[18 * b + 1]! << 8));
      // Each weight's level is the nearest one under d (a tie may go either way).
      for (let j = 0; j < 32; j++) {
        const q = j < 16 ? out[18 * b + 2 + j]! & 15 : out[18 * b + 2 + j - 16]! >> 4;
        const best = Math.min(...IQ4_LEVELS.map((l) => Math.abs(xs[j]! - d * l)));
        assert.ok(Math.abs(xs[j]! - d * IQ4_LEVELS[q]!) <= best * (1 + 1e-6) + 1e-7, `block ${b} weight ${j}`);
        assert.equal(back[32 * b + j], Math.fround(d * IQ4_LEVELS[q]!));
      }
      // The searched scale fits at least as well (x²-weighted) as the plain max|x| / 127 one.
      const max = xs.reduce((m, v) => (Math.abs(v) > Math.abs(m) ? v : m), 0), plain = Math.fround(max / 127);
      const err = (scale: number) => xs.reduce((e, v) => { const r = Math.min(...IQ4_LEVELS.map((l) => Math.abs(v - scale * l))); return e + v * v * r * r; }, 0);
      assert.ok(err(d) <= err(plain) * 1.01, `block ${b}: ${err(d)} vs ${err(plain)}`);
    }
    // A block of zeros is d = 0 with every weight on the level nearest zero (1).
    quantizeRows("iq4_nl", new Float32Array(32), 32, out.subarray(0, 18));
    assert.deepEqual(Array.from(dequantizeRows("iq4_nl", out.subarray(0, 18), 32)), new Array(32).fill(0));
  });

  it("rows of any length: blocks never span rows, the last block is zero-padded", () => {
    for (const dtype of DTYPES) {
      for (const K of [1, 31, 33, 50, 64, 100]) {
        const x = randomArray(3 * K, K);
        const out = new Uint8Array(3 * quantRowBytes(dtype, K));
        quantizeRows(dtype, x, K, out);
        const back = dequantizeRows(dtype, out, K);
        assert.equal(back.length, 3 * K);
        const step = dtype === "q8_0" ? 1 / 127 : dtype === "q5_0" || dtype === "q5_1" ? 1 / 16 : 1 / 8;
        back.forEach((v, i) => assert.ok(Math.abs(v - x[i]!) <= step * 1.01 * Math.max(...Array.from(x.subarray(Math.floor(i / K) * K, Math.floor(i / K) * K + K), Math.abs)), `${dtype} K=${K} element ${i}`));
      }
    }
  });
});

for (const build of BUILDS) {
  describe(`block-quantized linear layer (${build} build)`, () => {
    const shapes: [number, number, number][] = [[1, 1, 1], [1, 7, 31], [1, 13, 33], [2, 9, 50], [3, 5, 64], [4, 6, 96], [5, 11, 100], [9, 4, 576], [1, 64, 1000]];
    for (const dtype of DTYPES) {
      it(`${dtype}: equals the float64 emulation of llama.cpp's arithmetic for any M, N and K (tails), with a bias`, async () => {
        const rt = await runtimeFor(build);
        for (const [M, N, K] of shapes) {
          const w = randomArray(N * K, 11 + K), x = randomArray(M * K, 12 + M), bias = randomArray(N, 13);
          const wb = rt.upload(w, dtype, K), xb = rt.upload(x), bb = rt.upload(bias), yb = rt.alloc(M * N);
          try {
            rt.linearInto({ x: xb, weight: wb, bias: bb, out: yb, inFeatures: K, outFeatures: N });
            const ref = emulate(dtype, x, blocksOf(rt, wb), M, N, K);
            const y = yb.array;
            for (let i = 0; i < y.length; i++) {
              const want = ref[i]! + bias[i % N]!;
              assert.ok(Math.abs(y[i]! - want) <= 1e-5 * (1 + Math.abs(want)), `${M}x${N}x${K} element ${i}: ${y[i]} vs ${want}`);
            }
          } finally { for (const b of [wb, xb, bb, yb]) b.free(); }
        }
      });

      it(`${dtype}: prefill-size calls: from linear_quant_f32_rows rows x in f32 times the stored weights (the exact product to f32 rounding), or in a build without such rows (the relaxed build's unsigned formats) packed integer panels on x quantized; any K (tails, K slices), with a bias`, async () => {
        const rt = await runtimeFor(build);
        const from = rt.kernels.linear_quant_f32_rows(WEIGHT_FORMATS[dtype]);
        if (from === 2147483647) {
          // Every row count reads x quantized (the relaxed build's Q4_0 / Q5_0 / Q4_1 / Q5_1): llama.cpp's
          // arithmetic; from 12 rows in packed panels (row tiles of 4 and their tails, column groups of 4
          // and theirs, K tails, more columns than a panel block), below in the GEMV, each row the
          // bits it has in a call of its own (a decode step).
          for (const [M, N, K] of [[8, 7, 31], [11, 13, 33], [37, 70, 576], [16, 5, 1000], [128, 3, 64], [12, 11, 100], [13, 1700, 96]] as const) {
            const w = randomArray(N * K, 31 + K), x = randomArray(M * K, 32 + M), bias = randomArray(N, 33);
            const wb = rt.upload(w, dtype, K), xb = rt.upload(x), bb = rt.upload(bias), yb = rt.alloc(M * N), y1 = rt.alloc(N);
            try {
              rt.linearInto({ x: xb, weight: wb, bias: bb, out: yb, inFeatures: K, outFeatures: N });
              const ref = emulate(dtype, x, blocksOf(rt, wb), M, N, K);
              for (let i = 0; i < M * N; i++) {
                const want = ref[i]! + bias[i % N]!;
                assert.ok(Math.abs(yb.array[i]! - want) <= 1e-5 * (1 + Math.abs(want)), `${M}x${N}x${K} element ${i}: ${yb.array[i]} vs ${want}`);
              }
              for (let m = 0; m < (M < 12 ? M : 0); m++) {
                const row = rt.upload(x.subarray(m * K, (m + 1) * K));
                rt.linearInto({ x: row, weight: wb, bias: bb, out: y1, inFeatures: K, outFeatures: N });
                assert.deepEqual(y1.toFloat32Array(), yb.toFloat32Array().subarray(m * N, (m + 1) * N), `${M}x${N}x${K}, row ${m} alone`);
                row.free();
              }
            } finally { for (const b of [wb, xb, bb, yb, y1]) b.free(); }
          }
          return;
        }
        assert.ok(from >= 4 && from <= 64, `${from}`);
        for (const [M, N, K] of [[from, 7, 31], [from, 13, 33], [from + 1, 9, 100], [37, 70, 576], [from + 3, 5, 1000], [128, 3, 64]] as const) {
          checkExactProduct(rt, dtype, M, N, K);
        }
        // One row fewer reads x quantized: the emulation of llama.cpp's arithmetic, as above.
        const [M, N, K] = [from - 1, 6, 96];
        const w = randomArray(N * K, 41), x = randomArray(M * K, 42);
        const wb = rt.upload(w, dtype, K), xb = rt.upload(x), yb = rt.alloc(M * N);
        rt.linearInto({ x: xb, weight: wb, out: yb, inFeatures: K, outFeatures: N });
        const ref = emulate(dtype, x, blocksOf(rt, wb), M, N, K);
        for (let i = 0; i < M * N; i++) assert.ok(Math.abs(yb.array[i]! - ref[i]!) <= 1e-5 * (1 + Math.abs(ref[i]!)), `${M} rows, element ${i}`);
        for (const b of [wb, xb, yb]) b.free();
      });

      it(`${dtype}: within the bound that activation quantization allows of the exact product with the stored weights`, async () => {
        const rt = await runtimeFor(build);
        const [M, N, K] = [3, 40, 576];
        const w = randomArray(N * K, 21), x = randomArray(M * K, 22);
        const wb = rt.upload(w, dtype, K);
        const stored = wb.toFloat32Array();
        const y = rt.linear({ x, weight: new Float32Array(0), inFeatures: K, outFeatures: N, ...{ weight: stored } });
        const yq = rt.alloc(M * N), xb = rt.upload(x);
        rt.linearInto({ x: xb, weight: wb, out: yq, inFeatures: K, outFeatures: N });
        // |x - x̂| <= d/2 per block of 32, d = max|x in the block| / 127.
        for (let m = 0; m < M; m++) {
          for (let n = 0; n < N; n++) {
            let bound = 0;
            for (let b = 0; b < K / 32; b++) {
              let amax = 0, wsum = 0;
              for (let j = 0; j < 32; j++) { amax = Math.max(amax, Math.abs(x[m * K + b * 32 + j]!)); wsum += Math.abs(stored[n * K + b * 32 + j]!); }
              bound += (amax / 127 / 2) * wsum;
            }
            const err = Math.abs(yq.array[m * N + n]! - y[m * N + n]!);
            assert.ok(err <= bound * 1.001 + 1e-5, `(${m}, ${n}): ${err} > ${bound}`);
          }
        }
        for (const b of [wb, yq, xb]) b.free();
      });
    }
  });
}

/**
 * y = x · Wᵀ in float64 for K-quants: per activation block (32, or `block` 256: the relaxed
 * build's super-blocks), da · Σ w·q_x with the stored weights (d·sc·q - dmin·m,
 * d·sc·(q - 32)); also Σ |terms| for the tolerance.
 */
function emulateK(dtype: "q2_k" | "q3_k" | "q4_k" | "q5_k" | "q6_k" | "q6_k_u8" | "q5_k_u8", x: Float32Array, w: Uint8Array, M: number, N: number, K: number, block = 32): { y: Float64Array; magnitude: Float64Array } {
  const stored = dequantizeRows(dtype, w, K), nb = K / block, shift = Math.log2(block);
  const { q, d } = quantizeActivations(x, K, block);
  const y = new Float64Array(M * N), magnitude = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let acc = 0, mag = 0;
      for (let k = 0; k < K; k++) {
        const t = stored[n * K + k]! * q[m * K + k]! * d[m * nb + (k >> shift)]!;
        acc += t; mag += Math.abs(t);
      }
      y[m * N + n] = acc; magnitude[m * N + n] = mag;
    }
  }
  return { y, magnitude };
}

describe("K-quant weights (Q4_K, Q5_K, Q6_K: GGUF super-blocks of 256)", () => {
  it("Q6_K, Q5_K, Q4_K, Q3_K and Q2_K quantize into ggml's layouts: the reference dequantizer gives back the floats within each format's step", () => {
    const K = 512, x = randomArray(3 * K, 5);
    for (const [dtype, levels] of [["q6_k", 31], ["q6_k_u8", 31], ["q5_k", 31], ["q4_k", 15], ["q3_k", 4], ["q2_k", 3]] as const) {
      const out = new Uint8Array(3 * quantRowBytes(dtype, K));
      quantizeRows(dtype, x, K, out);
      const back = dequantizeRows(dtype, out, K);
      // Steps fitted by least squares (llama.cpp's searches) may clip a value to lower the others'
      // error: each group's values within two steps (Q6_K / Q3_K: max|x| / 31 / 4 per 16; Q4_K / Q5_K /
      // Q2_K: a range of at most 2·max|x| in 15 / 31 / 3 steps), and the RMS error within that of a uniform error over one step.
      let se = 0, expected = 0;
      for (let i = 0; i < x.length; i += 16) {
        let amax = 0;
        for (let j = 0; j < 16; j++) amax = Math.max(amax, Math.abs(x[i + j]!));
        const step = dtype === "q6_k" || dtype === "q6_k_u8" || dtype === "q3_k" ? amax / levels : (2 * amax) / levels;
        expected += 16 * (step * step) / 12;
        for (let j = 0; j < 16; j++) {
          const e = back[i + j]! - x[i + j]!;
          se += e * e;
          assert.ok(Math.abs(e) <= 2 * step + 1e-6, `${dtype} ${i + j}: ${back[i + j]} vs ${x[i + j]}`);
        }
      }
      // Q3_K's 8 signed levels reach one step less far on one side: values there clip (measured
      // 1.04x the uniform figure on these weights; Q2_K 0.72x).
      const allowance = dtype === "q3_k" ? 1.1 : 1;
      assert.ok(se <= expected * allowance * allowance, `${dtype}: RMS error ${Math.sqrt(se / x.length)} vs ${Math.sqrt(expected / x.length)}`);
    }
    assert.throws(() => quantRowBytes("q4_k", 576), /q4_k rows are whole super-blocks of 256 weights; a row of 576 is not/);
  });

  for (const build of BUILDS) {
    for (const dtype of ["q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q6_k_u8", "q5_k_u8"] as const) {
      // The relaxed build's K-quant GEMV reads x quantized per 256 (one scale a super-block, as llama.cpp's Q8_K).
      const block = build === "relaxed" ? 256 : 32;
      it(`${build} build, ${dtype}: equals the float64 emulation (the stored weights times activations quantized per ${block}) for GEMV rows, batches and prefill-size calls, with a bias; rows alone give their bits below the packed panels' 12 rows`, async () => {
        const rt = await runtimeFor(build);
        const from = rt.kernels.linear_quant_f32_rows(WEIGHT_FORMATS[dtype]);
        // Packed integer panels (the relaxed build's K-quants) read x quantized at every row count.
        const panels = from === 2147483647;
        assert.ok(panels ? build === "relaxed" : from >= 4 && from <= 64, `${from}`);
        const gemv = [[1, 1, 256], [1, 37, 512], [3, 13, 1536], [Math.min(from, 12) - 1, 9, 768], [2, 301, 256]] as const;
        // Panels: row tiles of 4 and their tails, column groups of 4 and theirs, panel blocks of columns (K = 4096: 8 a block).
        const packed = [[12, 7, 256], [37, 70, 1536], [15, 5, 1024], [13, 29, 4096], [128, 3, 512]] as const;
        for (const [M, N, K] of panels ? [...gemv, ...packed] : gemv) {
          const w = randomArray(N * K, 11 + K), x = randomArray(M * K, 12 + M), bias = randomArray(N, 13);
          const wb = rt.upload(w, dtype, K), xb = rt.upload(x), bb = rt.upload(bias), yb = rt.alloc(M * N), y1 = rt.alloc(N);
          try {
            rt.linearInto({ x: xb, weight: wb, bias: bb, out: yb, inFeatures: K, outFeatures: N });
            const { y: ref, magnitude } = emulateK(dtype, x, blocksOf(rt, wb), M, N, K, block);
            for (let i = 0; i < M * N; i++) {
              const want = ref[i]! + bias[i % N]!;
              assert.ok(Math.abs(yb.array[i]! - want) <= 1e-6 * magnitude[i]! + 1e-6, `${M}x${N}x${K} element ${i}: ${yb.array[i]} vs ${want}`);
            }
            if (M < 12) {
              const m = M - 1, row = rt.upload(x.subarray(m * K, (m + 1) * K));
              rt.linearInto({ x: row, weight: wb, bias: bb, out: y1, inFeatures: K, outFeatures: N });
              assert.deepEqual(y1.toFloat32Array(), yb.toFloat32Array().subarray(m * N, (m + 1) * N), `${M}x${N}x${K}, row ${m} alone`);
              row.free();
            }
          } finally { for (const b of [wb, xb, bb, yb, y1]) b.free(); }
        }
        // From linear_quant_f32_rows rows: x in f32 times the stored weights (each dequantized exactly as the host does).
        if (!panels) {
          for (const [M, N, K] of [[from, 7, 256], [37, 70, 1536], [from + 3, 5, 1024]] as const) checkExactProduct(rt, dtype, M, N, K);
        }
        // The embedding lookup dequantizes a row exactly as the host does.
        const K = 512, table = rt.upload(randomArray(6 * K, 3), dtype, K), ids = [4, 0, 5, 4];
        const idBuf = rt.alloc(ids.length), rows = rt.alloc(ids.length * K);
        new Int32Array(rt.memory.memory.buffer, idBuf.ptr, ids.length).set(ids);
        rt.kernels[`embed_rows_${dtype}`](table.ptr, K, idBuf.ptr, 0, ids.length, rows.ptr);
        const all = table.toFloat32Array();
        ids.forEach((id, r) => assert.deepEqual(rows.toFloat32Array().subarray(r * K, (r + 1) * K), all.subarray(id * K, (id + 1) * K), `row ${r}`));
        for (const b of [table, idBuf, rows]) b.free();
      });
    }
  }

  // Weights of a trained model's scale give super-block scales d below f16's normal range (Q6_K:
  // max group scale / 128): the kernels read them without arithmetic on subnormal f32s (halfAt).
  for (const build of BUILDS) {
    it(`${build} build: K-quant weights whose super-block scales are f16 subnormals compute and dequantize exactly as normal ones`, async () => {
      const rt = await runtimeFor(build);
      const scaleOffset = { q2_k: 80, q3_k: 108, q4_k: 0, q5_k: 0, q6_k: 208, q6_k_u8: 272, q5_k_u8: 0 } as const;
      for (const dtype of ["q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q6_k_u8", "q5_k_u8"] as const) {
        const block = build === "relaxed" ? 256 : 32;
        const M = 2, N = 24, K = 512, w = randomArray(N * K, 41, 4e-4), x = randomArray(M * K, 42);
        const wb = rt.upload(w, dtype, K), xb = rt.upload(x), yb = rt.alloc(M * N), rows = rt.alloc(3 * K), ids = rt.alloc(3);
        try {
          const blocks = blocksOf(rt, wb), bytes = quantRowBytes(dtype, 256);
          let subnormal = 0;
          for (let o = 0; o < blocks.length; o += bytes) if (((blocks[o + scaleOffset[dtype] + 1]! >> 2) & 31) === 0) subnormal++;
          assert.ok(subnormal >= (blocks.length / bytes) / 2, `${dtype}: ${subnormal} of ${blocks.length / bytes} scales subnormal`);
          rt.linearInto({ x: xb, weight: wb, out: yb, inFeatures: K, outFeatures: N });
          const { y: ref, magnitude } = emulateK(dtype, x, blocks, M, N, K, block);
          for (let i = 0; i < M * N; i++) assert.ok(Math.abs(yb.array[i]! - ref[i]!) <= 1e-6 * magnitude[i]! + 1e-12, `${dtype} element ${i}: ${yb.array[i]} vs ${ref[i]}`);
          new Int32Array(rt.memory.memory.buffer, ids.ptr, 3).set([5, 0, 23]);
          rt.kernels[`embed_rows_${dtype}`](wb.ptr, K, ids.ptr, 0, 3, rows.ptr);
          const all = dequantizeRows(dtype, blocks, K);
          [5, 0, 23].forEach((id, r) => assert.deepEqual(rows.toFloat32Array().subarray(r * K, (r + 1) * K), all.subarray(id * K, (id + 1) * K), `${dtype} row ${id}`));
        } finally { for (const b of [wb, xb, yb, rows, ids]) b.free(); }
      }
    });
  }
});

/**
 * The linear kernel on a format's bytes unpacked (`unpacked`, a *_u8 dtype) gives the stored
 * format's bits for each [M, N, K] (GEMV, batches, panels), whole and with the columns split in
 * two (two threads' shares).
 */
async function assertUnpackedBits(build: (typeof BUILDS)[number], stored: QuantDtype, unpacked: QuantDtype, shapes: readonly (readonly [number, number, number])[], seed: number): Promise<void> {
  const rt = await runtimeFor(build);
  const kernel = rt.kernels[`linear_${unpacked}` as "linear_q6_k_u8"];
  for (const [M, N, K] of shapes) {
    const w = randomArray(N * K, seed + M), x = randomArray(M * K, seed + 1 + N);
    const packed = rt.upload(w, stored, K), bytes = rt.upload(w, unpacked, K), xb = rt.upload(x), a = rt.alloc(M * N), b = rt.alloc(M * N);
    try {
      assert.deepEqual(bytes.toFloat32Array(), packed.toFloat32Array());
      rt.linearInto({ x: xb, weight: packed, out: a, inFeatures: K, outFeatures: N });
      rt.linearInto({ x: xb, weight: bytes, out: b, inFeatures: K, outFeatures: N });
      assert.ok(a.array.every(Number.isFinite));
      assert.deepEqual(b.toFloat32Array(), a.toFloat32Array(), `${M}x${N}x${K}`);
      // Columns in two ranges (two threads' shares) give the same bits.
      const scratch = rt.alloc(rt.kernels.linear_quant_scratch_bytes(M, K) / 4), half = N >> 1;
      b.array.fill(NaN);
      kernel(xb.ptr, bytes.ptr, 0, b.ptr, M, N, K, 0, half, 0, scratch.ptr);
      kernel(xb.ptr, bytes.ptr, 0, b.ptr, M, N, K, half, N, 0, scratch.ptr);
      assert.deepEqual(b.toFloat32Array(), a.toFloat32Array(), `${M}x${N}x${K}, columns split at ${half}`);
      scratch.free();
    } finally { for (const buf of [packed, bytes, xb, a, b]) buf.free(); }
  }
}

describe("Q5_K_U8 (Q5_K a byte a weight, as a file's Q5_K loads)", () => {
  it("q5kToU8 keeps every value: Q5_K super-blocks and their unpacked bytes dequantize to the same floats", () => {
    const K = 768, x = randomArray(5 * K, 25);
    const packed = new Uint8Array(5 * quantRowBytes("q5_k", K)), unpacked = new Uint8Array(5 * quantRowBytes("q5_k_u8", K));
    quantizeRows("q5_k", x, K, packed);
    quantizeRows("q5_k_u8", x, K, unpacked);
    assert.equal(unpacked.length, 5 * (K / 256) * 272);
    assert.deepEqual(q5kToU8(packed, 5 * K), unpacked);
    assert.deepEqual(dequantizeRows("q5_k_u8", unpacked, K), dequantizeRows("q5_k", packed, K));
    assert.ok(unpacked.every((b, i) => i % 272 < 16 || b <= 31), "weights are 0..31");
    assert.ok(unpacked.some((b, i) => i % 272 >= 16 && b >= 16), "fifth bits occur");
  });

  for (const build of BUILDS) {
    it(`${build} build: linear_q5_k_u8 gives linear_q5_k's bits on the same weights (GEMV, batches, panels, column splits)`, async () => {
      await assertUnpackedBits(build, "q5_k", "q5_k_u8", [[1, 37, 512], [5, 13, 1536], [12, 70, 256], [37, 29, 4096], [128, 9, 512]], 61);
    });
  }
});

describe("Q6_K_U8 (Q6_K a byte a weight, as a file's Q6_K loads)", () => {
  it("q6kToU8 keeps every value: Q6_K blocks and their unpacked bytes dequantize to the same floats", () => {
    const K = 768, x = randomArray(5 * K, 21);
    const packed = new Uint8Array(5 * quantRowBytes("q6_k", K)), unpacked = new Uint8Array(5 * quantRowBytes("q6_k_u8", K));
    quantizeRows("q6_k", x, K, packed);
    quantizeRows("q6_k_u8", x, K, unpacked);
    assert.deepEqual(q6kToU8(packed, 5 * K), unpacked);
    assert.deepEqual(dequantizeRows("q6_k_u8", unpacked, K), dequantizeRows("q6_k", packed, K));
    assert.ok(unpacked.every((b, i) => i % 274 >= 256 || b <= 63), "weights are 0..63");
  });

  for (const build of BUILDS) {
    it(`${build} build: linear_q6_k_u8 gives linear_q6_k's bits on the same weights (GEMV, batches, panels, column splits)`, async () => {
      await assertUnpackedBits(build, "q6_k", "q6_k_u8", [[1, 37, 512], [5, 13, 1536], [12, 70, 256], [37, 29, 4096], [128, 9, 512]], 31);
    });
  }
});

for (const [stored, unpackedDtype, head] of [["q5_0", "q5_0_u8", 2], ["q5_1", "q5_1_u8", 4]] as const) {
  describe(`${unpackedDtype.toUpperCase()} (${stored.toUpperCase()} a byte a weight, as a file's ${stored.toUpperCase()} loads)`, () => {
    it(`fiveBitToU8 keeps every value: ${stored.toUpperCase()} blocks and their unpacked bytes dequantize to the same floats`, () => {
      const K = 576, x = randomArray(5 * K, 23), bytes = head + 32;
      const packed = new Uint8Array(5 * quantRowBytes(stored, K)), unpacked = new Uint8Array(5 * quantRowBytes(unpackedDtype, K));
      quantizeRows(stored, x, K, packed);
      quantizeRows(unpackedDtype, x, K, unpacked);
      assert.equal(unpacked.length, 5 * (K / 32) * bytes);
      assert.deepEqual(fiveBitToU8(stored, packed), unpacked);
      assert.deepEqual(dequantizeRows(unpackedDtype, unpacked, K), dequantizeRows(stored, packed, K));
      assert.ok(unpacked.every((b, i) => i % bytes < head || b <= 31), "weights are 0..31");
      assert.ok(unpacked.some((b, i) => i % bytes >= head && b >= 16) && unpacked.some((b, i) => i % bytes >= head && b < 16), "both halves of the range occur");
    });

    for (const build of BUILDS) {
      it(`${build} build: linear_${unpackedDtype} gives linear_${stored}'s bits on the same weights (GEMV, batches, panels, column splits, a partial last block)`, async () => {
        await assertUnpackedBits(build, stored, unpackedDtype, [[1, 37, 576], [3, 13, 896], [12, 70, 64], [37, 29, 1536], [128, 9, 576], [2, 11, 70]], 41);
      });
    }
  });
}

describe("block-quantized weights: buffers, threads and models", function () {
  this.timeout(120_000);

  it("uploading a tensor's blocks as bytes keeps them as they are; views, set and reads go by whole rows", async () => {
    const rt = await createRuntime();
    for (const dtype of DTYPES) {
      const K = 40, w = randomArray(5 * K, 3);
      const a = rt.upload(w, dtype, K);
      const bytes = new Uint8Array(rt.memory.memory.buffer, a.ptr, a.byteLength).slice();
      assert.equal(a.byteLength, 5 * quantRowBytes(dtype, K));
      const b = rt.upload(bytes, dtype, K);
      assert.equal(b.length, 5 * K);
      assert.deepEqual(b.toFloat32Array(), a.toFloat32Array());
      assert.deepEqual(a.subarray(2 * K, 4 * K).toFloat32Array(), a.toFloat32Array().subarray(2 * K, 4 * K));
      assert.throws(() => a.subarray(1, K), /whole rows of 40/);
      a.set(new Float32Array(K), K);
      assert.ok(a.subarray(K, 2 * K).toFloat32Array().every((v) => v === 0));
      assert.throws(() => a.set(new Float32Array(3), 0), /whole rows of 40/);
      assert.throws(() => rt.upload(bytes.subarray(1), dtype, K), /not whole .* rows of 40 weights/);
      assert.throws(() => rt.upload(w, dtype, undefined as unknown as number), /rowLength must be an integer/);
      assert.throws(() => rt.upload(w, dtype, 7), /not whole rows of 7/);
      const x = rt.upload(randomArray(2 * 20, 4)), y = rt.alloc(2 * 10);
      assert.throws(() => rt.linearInto({ x, weight: a, out: y, inFeatures: 20, outFeatures: 10 }), /has rows of 40; inFeatures is 20/);
      for (const buf of [a, b, x, y]) buf.free();
    }
  });

  it("every block-quantized kernel stays inside the scratch linear_quant_scratch_bytes(M, K) says, whatever path the row count takes (both builds)", async () => {
    // A call quantizing x itself and packing a panel after it, or with x quantized elsewhere; the
    // bytes just past the scratch must stay as they were.
    for (const build of BUILDS) {
      const rt = await runtimeFor(build);
      for (const dtype of ALL_DTYPES) {
        for (const [M, N, K] of [[1, 9, 256], [11, 9, 512], [12, 70, 256], [13, 600, 64], [37, 5, 1024], [130, 33, 96]] as const) {
          if (K % QUANT_BLOCK_WEIGHTS[dtype] !== 0) continue;
          const bytes = rt.kernels.linear_quant_scratch_bytes(M, K), tail = 4096;
          const wb = rt.upload(randomArray(N * K, 5), dtype, K), xb = rt.upload(randomArray(M * K, 6)), yb = rt.alloc(M * N);
          const scratch = rt.alloc((bytes + tail) / 4), qa = rt.alloc(bytes / 4);
          const guard = () => new Uint8Array(rt.memory.memory.buffer, scratch.ptr + bytes, tail);
          guard().fill(0xa5);
          const kernel = rt.kernels[`linear_${dtype}`];
          kernel(xb.ptr, wb.ptr, 0, yb.ptr, M, N, K, 0, N, 0, scratch.ptr);
          assert.ok(guard().every((b) => b === 0xa5), `${build} ${dtype} ${M}x${N}x${K}: wrote past its scratch`);
          if (rt.readsQuantizedX(dtype, M)) {
            rt.kernels.quantize_activations(xb.ptr, M, K, qa.ptr, 0, M * Math.ceil(K / 32));
            kernel(qa.ptr, wb.ptr, 0, yb.ptr, M, N, K, 0, N, CODES.LINEAR_X_QUANTIZED, scratch.ptr);
            assert.ok(guard().every((b) => b === 0xa5), `${build} ${dtype} ${M}x${N}x${K}, x quantized: wrote past its scratch`);
          }
          for (const b of [wb, xb, yb, scratch, qa]) b.free();
        }
      }
    }
  });

  it("column splits over 1, 2 and 3 threads give the same bits, GEMV and GEMM", async () => {
    const runtimes = [await createRuntime(), await createRuntime({ threads: 2 }), await createRuntime({ threads: 3 })];
    try {
      for (const dtype of ALL_DTYPES) {
        for (const [M, N, K] of [[1, 1031, 512], [2, 301, 96], [37, 300, 256], [2, 301, 768]] as const) {
          if (K % QUANT_BLOCK_WEIGHTS[dtype] !== 0) continue;
          const w = randomArray(N * K, 5), x = randomArray(M * K, 6), bias = randomArray(N, 7);
          const ys = runtimes.map((rt) => {
            const wb = rt.upload(w, dtype, K), xb = rt.upload(x), bb = rt.upload(bias), yb = rt.alloc(M * N);
            rt.linearInto({ x: xb, weight: wb, bias: bb, out: yb, inFeatures: K, outFeatures: N });
            const y = yb.array.slice();
            for (const b of [wb, xb, bb, yb]) b.free();
            return y;
          });
          assert.ok(ys[0]!.every(Number.isFinite));
          assert.deepEqual(ys[1], ys[0], `${dtype} ${M}x${N}x${K}, 2 threads`);
          assert.deepEqual(ys[2], ys[0], `${dtype} ${M}x${N}x${K}, 3 threads`);
        }
      }
    } finally { for (const rt of runtimes) await rt.dispose(); }
  });

  it("GEMV: every column alone gives the bits of one call over all columns (four distant rows at a time, rows over several blocks), and of a batch of four rows", async () => {
    const rt = await createRuntime();
    try {
      for (const dtype of DTYPES) {
        for (const [N, K] of [[37, 576], [21, 100], [301, 64]] as const) { // 301 rows of K = 64: two GEMV blocks
          const wb = rt.upload(randomArray(N * K, 11), dtype, K), x = randomArray(K, 12), xb = rt.upload(x);
          const all = rt.alloc(N), alone = rt.alloc(N), scratch = rt.alloc(rt.kernels.linear_quant_scratch_bytes(4, K) / 4);
          const kernel = rt.kernels[`linear_${dtype}`];
          kernel(xb.ptr, wb.ptr, 0, all.ptr, 1, N, K, 0, N, 0, scratch.ptr);
          alone.array.fill(NaN);
          for (let n = 0; n < N; n++) kernel(xb.ptr, wb.ptr, 0, alone.ptr, 1, N, K, n, n + 1, 0, scratch.ptr);
          assert.deepEqual(alone.toFloat32Array(), all.toFloat32Array(), `${dtype} ${N}x${K}`);
          // The same row among four (the GEMM tile, as in a batch of sequences decoding together).
          const x4 = rt.upload(Float32Array.from({ length: 4 * K }, (_, i) => x[i % K]!)), y4 = rt.alloc(4 * N);
          kernel(x4.ptr, wb.ptr, 0, y4.ptr, 4, N, K, 0, N, 0, scratch.ptr);
          for (let r = 0; r < 4; r++) assert.deepEqual(y4.toFloat32Array().subarray(r * N, (r + 1) * N), all.toFloat32Array(), `${dtype} ${N}x${K}, row ${r} of 4`);
          for (const b of [wb, xb, all, alone, scratch, x4, y4]) b.free();
        }
      }
    } finally { await rt.dispose(); }
  });

  it("activations quantized once (quantize_activations, by block ranges on any threads) give the same bits as calls that quantize for themselves, with columns claimed in chunks", async () => {
    const runtimes = [await createRuntime(), await createRuntime({ threads: 2 }), await createRuntime({ threads: 3 })];
    try {
      for (const dtype of ALL_DTYPES) {
        // 11: the most rows that read quantized x in every format; 37 rows (integer panels) where a build reads it quantized at any count.
        const shapes: [number, number, number][] = [[1, 1031, 512], [2, 301, 96], [11, 300, 250], [11, 300, 768]].filter(([, , K]) => K! % QUANT_BLOCK_WEIGHTS[dtype] === 0) as [number, number, number][];
        // (The relaxed build's unsigned formats: packed integer panels from 12 rows, a 4-row tile's tail of 1.)
        if (runtimes[0]!.readsQuantizedX(dtype, 37)) shapes.push(...([[37, 70, 576], [37, 70, 512]] as [number, number, number][]).filter(([, , K]) => K % QUANT_BLOCK_WEIGHTS[dtype] === 0));
        for (const [M, N, K] of shapes) {
          const w = randomArray(N * K, 8), x = randomArray(M * K, 9), y0 = randomArray(M * N, 10);
          const ys = runtimes.map((rt) => {
            const wb = rt.upload(w, dtype, K), xb = rt.upload(x), self = rt.upload(y0), once = rt.upload(y0);
            const qa = rt.alloc(rt.kernels.linear_quant_scratch_bytes(M, K) / 4);
            // The calls' own scratch (a packed panel), one slot a thread.
            const slot = Math.ceil(rt.kernels.linear_quant_scratch_bytes(M, K) / 64) * 64, own = rt.alloc((3 * slot) / 4);
            rt.linearInto({ x: xb, weight: wb, out: self, inFeatures: K, outFeatures: N, accumulate: true });
            rt.runProgram((p) => {
              p.addPerThread(rt.quantizeJobs(xb.ptr, M, K, qa.ptr, p.threads));
              p.barrier();
              const jobs = rt.linearThreadJobs({ x: xb, weight: wb, out: once, inFeatures: K, outFeatures: N, accumulate: true }, p.threads, qa.ptr, (t, bytes) => {
                assert.ok(bytes <= slot, `${bytes} bytes of scratch`);
                return own.ptr + t * slot;
              });
              if (p.threads > 1) assert.ok(jobs.every((j) => j.claim && j.claim.chunk < N), "the threads claim columns in chunks");
              p.addPerThread(jobs);
              return () => undefined;
            });
            const out = [self.array.slice(), once.array.slice()];
            for (const b of [wb, xb, self, once, qa, own]) b.free();
            return out;
          });
          assert.ok(ys[0]![0]!.every(Number.isFinite));
          for (const [t, [self, once]] of ys.entries()) {
            assert.deepEqual(once, ys[0]![0], `${dtype} ${M}x${N}x${K}, quantized once, ${t + 1} threads`);
            assert.deepEqual(self, ys[0]![0], `${dtype} ${M}x${N}x${K}, quantized by the calls, ${t + 1} threads`);
          }
        }
        // From linear_quant_f32_rows rows the kernels read x in f32: quantized x offered for them is
        // refused. A build without such rows (the relaxed build's Q4_0) reads it quantized at any count.
        const rt = runtimes[1]!, K = QUANT_BLOCK_WEIGHTS[dtype] * 2, M = rt.kernels.linear_quant_f32_rows(WEIGHT_FORMATS[dtype]);
        if (M === 2147483647) { assert.equal(rt.readsQuantizedX(dtype, 1 << 20), true); continue; }
        assert.equal(rt.readsQuantizedX(dtype, M - 1), true);
        assert.equal(rt.readsQuantizedX(dtype, M), false);
        assert.equal(rt.readsQuantizedX("bf16", 1), false);
        const wb = rt.upload(randomArray(8 * K, 1), dtype, K), xb = rt.alloc(M * K), yb = rt.alloc(M * 8);
        assert.throws(() => rt.linearThreadJobs({ x: xb, weight: wb, out: yb, inFeatures: K, outFeatures: 8 }, 2, xb.ptr, () => 0), /quantized activations are for quantized weights below \d+ rows/);
        for (const b of [wb, xb, yb]) b.free();
      }
    } finally { for (const rt of runtimes) await rt.dispose(); }
  });

  it("models quantized at load (--dtype q8_0 / q4_0 / q5_0) run, their logits within a measured bound of f32, and take the format's bytes", async () => {
    const rt = await createRuntime();
    const files = syntheticModelFiles(undefined, { dtype: "F32" });
    const ids = [5, 77, 201, 3, 99, 150, 42, 7];
    const held = () => rt.stats().persistentLiveBytes - rt.stats().scratchReservedBytes;
    const logits = async (dtype?: "f32" | QuantDtype) => {
      const start = held();
      const m = await loadModel(rt, files, { dtype });
      const before = held() - start;
      const c = m.transformer.createCache();
      const out = m.transformer.forward(c, c.createSequence(), ids);
      c.dispose();
      m.dispose();
      return { out, weights: before };
    };
    const f32 = await logits("f32");
    const scale = Math.max(...Array.from(f32.out, Math.abs));
    // Measured on this synthetic model (uniform random weights, the hardest case for 4 bits):
    // max |Δlogit| / max |logit| 0.05 (Q8_0), 0.54 (Q4_0); the bounds leave room for both builds.
    for (const [dtype, bound, bytesPerWeight] of [["q8_0", 0.1, 34 / 32], ["q4_0", 0.8, 18 / 32], ["q5_0", 0.5, 22 / 32]] as const) {
      const q = await logits(dtype);
      let err = 0;
      q.out.forEach((v, i) => { err = Math.max(err, Math.abs(v - f32.out[i]!)); });
      assert.ok(Number.isFinite(err) && err <= bound * scale, `${dtype}: max |Δlogit| ${err} vs max |logit| ${scale}`);
      // Norms stay f32 and every buffer is 64-byte aligned: a little over the format's bytes.
      assert.ok(q.weights < f32.weights * (bytesPerWeight / 4) * 1.1, `${dtype}: ${q.weights} bytes of weights (f32: ${f32.weights})`);
    }
  });
});
