// Block-quantized weight formats in GGUF's layouts, the host's half of them: sizes, and
// quantizing / dequantizing rows in JS (at load, and for the tests' references). The kernels
// that compute on them are assembly/kernels/linear-quant.ts; the bytes are the same.
//   Q8_0: f16 d, 32 x i8 q              (34 bytes per 32 weights; w = d·q)
//   Q4_0: f16 d, 16 bytes of nibbles    (18 bytes per 32 weights; w = d·(q - 8); weight j in the
//         low nibble of byte j, weight j+16 in the high nibble)
//   Q5_0: f16 d, u32 qh, 16 bytes of nibbles  (22 bytes; w = d·(q - 16), q's bit 4 is bit j of qh)
//   IQ4_NL: Q4_0's layout, w = d·IQ4_LEVELS[q] (16 non-uniform levels, denser near zero)
//   Q4_1, Q5_1: f16 d, f16 m, then Q4_0's nibbles / Q5_0's qh and nibbles (20 / 24 bytes; w = d·q + m)
// A row of K weights is ceil(K/32) blocks; past K the last block holds zeros.
//   Q2_K, Q3_K, Q4_K, Q5_K, Q6_K: super-blocks of 256 (layouts in assembly/kernels/linear-kquant.ts); a row is
//         K / 256 of them, K a multiple of 256 (GGUF has no partial super-block).
//   Q6_K_U8: not a GGUF type: Q6_K unpacked to a byte a weight (256 bytes q in 0..63, Q6_K's 16 i8
//         scales, its f16 d: 274 bytes; w = d·sc·(q - 32)), what a file's Q6_K loads as (q6kToU8).
//   Q5_K_U8: not a GGUF type: Q5_K unpacked to a byte a weight (Q5_K's d, dmin and 12 bytes of
//         scales, then 256 bytes q in 0..31, sub-block s's weight j at 32s + j: 272 bytes), what a
//         file's Q5_K loads as (q5kToU8).
//   Q5_0_U8, Q5_1_U8: not GGUF types: Q5_0 / Q5_1 unpacked to a byte a weight (f16 d, Q5_1's f16 m,
//         then 32 bytes q in 0..31: 34 / 36 bytes; w = d·(q - 16) / d·q + m), what a file's Q5_0 /
//         Q5_1 load as (fiveBitToU8).
import { GGML_TYPES } from "./gguf.ts";
import { bf16ToF32, f16ToF32, f32ToF16 } from "./half.ts";

export type QuantDtype = "q8_0" | "q4_0" | "q5_0" | "q4_1" | "q5_1" | "iq4_nl" | "q2_k" | "q3_k" | "q4_k" | "q5_k" | "q6_k" | "q6_k_u8" | "q5_0_u8" | "q5_1_u8" | "q5_k_u8";
export const QUANT_BLOCK = 32;
/** Bytes of a Q6_K_U8 super-block: 256 weights, 16 scales, f16 d. */
const Q6_K_U8_BYTES = 274;
/** Bytes of a Q5_K_U8 super-block: Q5_K's 16 bytes of scales, then 256 weights. */
const Q5_K_U8_BYTES = 272;
/** Weights per block of each format (a K-quant's super-block). */
export const QUANT_BLOCK_WEIGHTS: Record<QuantDtype, number> = { q8_0: 32, q4_0: 32, q5_0: 32, q4_1: 32, q5_1: 32, iq4_nl: 32, q2_k: 256, q3_k: 256, q4_k: 256, q5_k: 256, q6_k: 256, q6_k_u8: 256, q5_0_u8: 32, q5_1_u8: 32, q5_k_u8: 256 };
export const QUANT_BLOCK_BYTES: Record<QuantDtype, number> = {
  q8_0: GGML_TYPES.Q8_0.bytes, q4_0: GGML_TYPES.Q4_0.bytes, q5_0: GGML_TYPES.Q5_0.bytes, q4_1: GGML_TYPES.Q4_1.bytes, q5_1: GGML_TYPES.Q5_1.bytes, iq4_nl: GGML_TYPES.IQ4_NL.bytes, q2_k: GGML_TYPES.Q2_K.bytes, q3_k: GGML_TYPES.Q3_K.bytes, q4_k: GGML_TYPES.Q4_K.bytes, q5_k: GGML_TYPES.Q5_K.bytes, q6_k: GGML_TYPES.Q6_K.bytes, q6_k_u8: Q6_K_U8_BYTES, q5_0_u8: 34, q5_1_u8: 36, q5_k_u8: Q5_K_U8_BYTES,
};

export function isQuantDtype(dtype: string): dtype is QuantDtype {
  return dtype === "q8_0" || dtype === "q4_0" || dtype === "q5_0" || dtype === "q4_1" || dtype === "q5_1" || dtype === "iq4_nl" || dtype === "q5_0_u8" || dtype === "q5_1_u8" || isKQuant(dtype as QuantDtype);
}

/** IQ4_NL's (and IQ4_XS's) 16 levels, ggml's kvalues_iq4nl: a nibble q stands for d·IQ4_LEVELS[q]. */
export const IQ4_LEVELS: readonly number[] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/**
 * What `dtype` options take for weights: a buffer dtype for every matrix, or "q4_k_m" / "q5_k_m":
 * llama.cpp's Q4_K_M / Q5_K_M mix, a type per tensor (weightDtypeOf).
 */
export type WeightChoice = "f32" | "bf16" | "f16" | QuantDtype | KQuantMix;

/** llama.cpp's K-quant mixes, a type per tensor (kMixTensorType). */
export type KQuantMix = "q4_k_m" | "q5_k_m";

/**
 * The type llama.cpp's Q4_K_M / Q5_K_M gives a matrix (by Hugging Face name; undefined: Q8_0), as
 * its quantizer picks them: Q6_K for the LM head (the embedding when tied) and for v_proj /
 * down_proj in its "more bits" layers (the first and last eighth, every third between), Q4_K /
 * Q5_K elsewhere, a fused qkv_proj (Phi-3) one step up (Q5_K / Q6_K); where rows are not whole
 * 256-blocks, its fallbacks Q8_0 (for Q6_K) and Q5_0 / Q5_1 (for Q4_K / Q5_K).
 */
export function kMixTensorType(mix: KQuantMix, name: string, shape: number[], layers: number, tied: boolean): "Q4_K" | "Q5_K" | "Q6_K" | "Q5_0" | "Q5_1" | undefined {
  const layer = Number(/layers\.(\d+)\./.exec(name)?.[1] ?? -1), eighth = Math.floor(layers / 8);
  const moreBits = layer >= 0 && (layer < eighth || layer >= Math.floor((7 * layers) / 8) || (layer - eighth) % 3 === 2);
  const head = name === "lm_head.weight" || (tied && name === "model.embed_tokens.weight");
  const six = head || ((name.includes("v_proj") || name.includes("down_proj")) && moreBits);
  const whole = shape[1]! % 256 === 0;
  // (Before v_proj's rule, whose name "qkv_proj" also holds.)
  if (name.includes("qkv_proj")) return mix === "q4_k_m" ? (whole ? "Q5_K" : "Q5_1") : whole ? "Q6_K" : undefined;
  if (six) return whole ? "Q6_K" : undefined;
  return mix === "q4_k_m" ? (whole ? "Q4_K" : "Q5_0") : whole ? "Q5_K" : "Q5_1";
}

/** A K-quant mix's GGUF file type (llama.cpp's LLAMA_FTYPE_MOSTLY_Q4_K_M / _Q5_K_M). */
export const K_MIX_FILE_TYPES: Record<KQuantMix, number> = { q4_k_m: 15, q5_k_m: 17 };

/**
 * The buffer dtype a weight matrix (rows of K) takes in memory for a WeightChoice: the choice
 * itself, or for a mix the mix's type, its Q6_K, Q5_K, Q5_0 and Q5_1 a byte a weight (Q6_K_U8,
 * Q5_K_U8, Q5_0_U8, Q5_1_U8: their values) and its Q8_0 fallbacks as Q8_0, as a K-quant mix's file
 * loads by default.
 */
export function weightDtypeOf(choice: WeightChoice, name: string, K: number, model: { numLayers: number; tieWordEmbeddings: boolean }): "f32" | "bf16" | "f16" | QuantDtype {
  if (choice !== "q4_k_m" && choice !== "q5_k_m") return choice;
  const type = kMixTensorType(choice, name, [0, K], model.numLayers, model.tieWordEmbeddings);
  return type === undefined ? "q8_0" : type in UNPACKED_FORMS ? UNPACKED_FORMS[type as UnpackedFrom].to : (type.toLowerCase() as QuantDtype);
}

/** A GGUF format's in-memory form a byte a weight, and the unpacking of its blocks (exact). */
interface UnpackedForm { readonly to: QuantDtype; readonly unpack: (bytes: Uint8Array, elements: number) => Uint8Array }
type UnpackedFrom = "Q6_K" | "Q5_K" | "Q5_0" | "Q5_1";
/** The formats whose bits, unpacked to a byte a weight, the kernels compute on faster: what a file of each loads as. */
export const UNPACKED_FORMS: Readonly<Record<UnpackedFrom, UnpackedForm>> = {
  Q6_K: { to: "q6_k_u8", unpack: q6kToU8 },
  Q5_K: { to: "q5_k_u8", unpack: q5kToU8 },
  Q5_0: { to: "q5_0_u8", unpack: (bytes) => fiveBitToU8("q5_0", bytes) },
  Q5_1: { to: "q5_1_u8", unpack: (bytes) => fiveBitToU8("q5_1", bytes) },
};

/** The GGUF type an unpacked in-memory dtype comes from (Q6_K for q6_k_u8 ...), or undefined. */
function packedFormOf(dtype: QuantDtype): UnpackedFrom | undefined {
  return (Object.keys(UNPACKED_FORMS) as UnpackedFrom[]).find((type) => UNPACKED_FORMS[type].to === dtype);
}

/** A K-quant: rows must be whole super-blocks of 256. */
export function isKQuant(dtype: QuantDtype): dtype is "q2_k" | "q3_k" | "q4_k" | "q5_k" | "q6_k" | "q6_k_u8" | "q5_k_u8" {
  return dtype === "q2_k" || dtype === "q3_k" || dtype === "q4_k" || dtype === "q5_k" || dtype === "q6_k" || dtype === "q6_k_u8" || dtype === "q5_k_u8";
}

/** Why rows of K weights cannot be stored as `dtype` (a K-quant's rows are whole super-blocks), or undefined. */
export function unfitRows(dtype: QuantDtype, K: number, tensor: string): string | undefined {
  if (!isKQuant(dtype) || K % QUANT_BLOCK_WEIGHTS[dtype] === 0) return undefined;
  return `${tensor} has rows of ${K} weights, not whole ${dtype} super-blocks of ${QUANT_BLOCK_WEIGHTS[dtype]} (use q8_0 or q4_0 for this model)`;
}

/** Bytes of one row of K weights (a K-quant's K must be a multiple of 256: RangeError else). */
export function quantRowBytes(dtype: QuantDtype, K: number): number {
  const block = QUANT_BLOCK_WEIGHTS[dtype];
  if (isKQuant(dtype) && K % block !== 0) throw new RangeError(`${dtype} rows are whole super-blocks of ${block} weights; a row of ${K} is not`);
  return Math.ceil(K / block) * QUANT_BLOCK_BYTES[dtype];
}

/**
 * Quantizes `rows` rows of K floats into `out` (quantRowBytes each), as ggml's reference
 * quantizers do: Q8_0 d = max|x| / 127, q = round(x / d); Q4_0 d = (the x of largest |x|) / -8,
 * q = min(15, trunc(x / d + 8.5)); Q5_0 d = (the x of largest |x|) / -16, q = min(31,
 * trunc(x / d + 16.5)), bit 4 of weight j in bit j of qh; Q4_1 / Q5_1 d = (max - min) / 15 / 31,
 * m = min, q = min(15 / 31, trunc((x - min) / d + 0.5)); IQ4_NL as iq4nlBlock. The scale is
 * rounded to f16 after the q are computed (IQ4_NL: before, its levels then fitted to it).
 */
export function quantizeRows(dtype: QuantDtype, x: ArrayLike<number>, K: number, out: Uint8Array): void {
  const packedForm = packedFormOf(dtype);
  if (packedForm) {
    // The file format's blocks, then its bits unpacked (the values a file of it loads as).
    const rows = x.length / K, rowBytes = quantRowBytes(dtype, K), stored = packedForm.toLowerCase() as QuantDtype;
    if (!Number.isInteger(rows) || out.length !== rows * rowBytes) throw new RangeError(`quantizeRows: ${x.length} values are not whole rows of ${K}, or the output is not ${rows * rowBytes} bytes`);
    const packed = new Uint8Array(rows * quantRowBytes(stored, K));
    quantizeRows(stored, x, K, packed);
    out.set(UNPACKED_FORMS[packedForm].unpack(packed, x.length));
    return;
  }
  if (isKQuant(dtype)) {
    const rowBytes = quantRowBytes(dtype, K);
    if (x.length % K !== 0 || out.length !== (x.length / K) * rowBytes) throw new RangeError(`quantizeRows: ${x.length} values are not whole rows of ${K}, or the output is not ${(x.length / K) * rowBytes} bytes`);
    out.set(quantizeGGML(dtype.toUpperCase() as "Q2_K" | "Q3_K" | "Q4_K" | "Q5_K" | "Q6_K", x instanceof Float32Array ? x : Float32Array.from(x), K));
    return;
  }
  const rows = x.length / K, nb = Math.ceil(K / QUANT_BLOCK), bb = QUANT_BLOCK_BYTES[dtype];
  if (!Number.isInteger(rows) || out.length !== rows * nb * bb) throw new RangeError(`quantizeRows: ${x.length} values are not whole rows of ${K}, or the output is not ${rows * nb * bb} bytes`);
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  const block = new Float32Array(QUANT_BLOCK);
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < nb; b++) {
      const at = (r * nb + b) * bb, k0 = b * QUANT_BLOCK;
      block.fill(0);
      for (let i = 0; i < QUANT_BLOCK && k0 + i < K; i++) block[i] = x[r * K + k0 + i]!;
      if (dtype === "q8_0") {
        let amax = 0;
        for (const v of block) amax = Math.max(amax, Math.abs(v));
        const d = Math.fround(amax / 127), id = d ? Math.fround(1 / d) : 0;
        view.setUint16(at, f32ToF16(d), true);
        for (let i = 0; i < QUANT_BLOCK; i++) view.setInt8(at + 2 + i, roundAway(Math.fround(block[i]! * id)));
      } else if (dtype === "iq4_nl") {
        iq4nlBlock(block, out, at);
      } else if (dtype === "q4_1" || dtype === "q5_1") {
        let lo = Infinity, hi = -Infinity;
        for (const v of block) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
        const top = dtype === "q4_1" ? 15 : 31, d = Math.fround((hi - lo) / top), id = d ? Math.fround(1 / d) : 0;
        view.setUint16(at, f32ToF16(d), true);
        view.setUint16(at + 2, f32ToF16(lo), true);
        const qs = at + (dtype === "q4_1" ? 4 : 8);
        let qh = 0;
        for (let j = 0; j < 16; j++) {
          const q0 = Math.min(top, Math.trunc(Math.fround(Math.fround(Math.fround(block[j]! - lo) * id) + 0.5)));
          const q1 = Math.min(top, Math.trunc(Math.fround(Math.fround(Math.fround(block[j + 16]! - lo) * id) + 0.5)));
          out[qs + j] = (q0 & 15) | ((q1 & 15) << 4);
          qh |= ((q0 >> 4) << j) | ((q1 >> 4) << (j + 16));
        }
        if (dtype === "q5_1") view.setUint32(at + 4, qh >>> 0, true);
      } else if (dtype === "q5_0") {
        const d = Math.fround(largestMagnitude(block) / -16), id = d ? Math.fround(1 / d) : 0;
        view.setUint16(at, f32ToF16(d), true);
        let qh = 0;
        for (let j = 0; j < 16; j++) {
          const q0 = Math.min(31, Math.trunc(Math.fround(Math.fround(block[j]! * id) + 16.5)));
          const q1 = Math.min(31, Math.trunc(Math.fround(Math.fround(block[j + 16]! * id) + 16.5)));
          out[at + 6 + j] = (q0 & 15) | ((q1 & 15) << 4);
          qh |= ((q0 >> 4) << j) | ((q1 >> 4) << (j + 16));
        }
        view.setUint32(at + 2, qh >>> 0, true);
      } else {
        const d = Math.fround(largestMagnitude(block) / -8), id = d ? Math.fround(1 / d) : 0;
        view.setUint16(at, f32ToF16(d), true);
        for (let j = 0; j < 16; j++) {
          const q0 = Math.min(15, Math.trunc(Math.fround(Math.fround(block[j]! * id) + 8.5)));
          const q1 = Math.min(15, Math.trunc(Math.fround(Math.fround(block[j + 16]! * id) + 8.5)));
          out[at + 2 + j] = q0 | (q1 << 4);
        }
      }
    }
  }
}

/** The rows back as floats (what the kernels compute with); each block's scale converted once. */
export function dequantizeRows(dtype: QuantDtype, bytes: Uint8Array, K: number): Float32Array {
  if (isKQuant(dtype)) {
    const rowBytes = quantRowBytes(dtype, K);
    if (bytes.length % rowBytes !== 0) throw new RangeError(`dequantizeRows: ${bytes.length} bytes are not whole rows of ${K} ${dtype} weights`);
    const elements = (bytes.length / rowBytes) * K;
    if (dtype === "q5_k_u8") return dequantizeGGML("Q5_K", u8ToQ5K(bytes, elements), elements);
    return dtype === "q6_k_u8" ? dequantizeQ6KU8(bytes, elements) : dequantizeGGML(dtype.toUpperCase() as "Q2_K" | "Q3_K" | "Q4_K" | "Q5_K" | "Q6_K", bytes, elements);
  }
  const nb = Math.ceil(K / QUANT_BLOCK), bb = QUANT_BLOCK_BYTES[dtype];
  const rows = bytes.length / (nb * bb);
  if (!Number.isInteger(rows)) throw new RangeError(`dequantizeRows: ${bytes.length} bytes are not whole rows of ${K} ${dtype} weights`);
  const out = new Float32Array(rows * K);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < nb; b++) {
      const at = (r * nb + b) * bb, d = f16ToF32(view.getUint16(at, true));
      if (dtype === "q5_1_u8") {
        const m = f16ToF32(view.getUint16(at + 2, true));
        for (let j = 0, k = b * QUANT_BLOCK; j < QUANT_BLOCK && k < K; j++, k++) out[r * K + k] = Math.fround(d * bytes[at + 4 + j]! + m);
        continue;
      }
      if (dtype === "q4_1" || dtype === "q5_1") {
        const m = f16ToF32(view.getUint16(at + 2, true)), qs = at + (dtype === "q4_1" ? 4 : 8);
        const qh = dtype === "q4_1" ? 0 : view.getUint32(at + 4, true);
        for (let j = 0, k = b * QUANT_BLOCK; j < QUANT_BLOCK && k < K; j++, k++) {
          const q = (j < 16 ? bytes[qs + j]! & 15 : bytes[qs + j - 16]! >> 4) | (((qh >>> j) & 1) << 4);
          out[r * K + k] = Math.fround(d * q + m);
        }
        continue;
      }
      for (let j = 0, k = b * QUANT_BLOCK; j < QUANT_BLOCK && k < K; j++, k++) {
        const q = dtype === "q8_0" ? view.getInt8(at + 2 + j)
          : dtype === "q5_0_u8" ? bytes[at + 2 + j]! - 16
          : dtype === "iq4_nl" ? IQ4_LEVELS[j < 16 ? bytes[at + 2 + j]! & 15 : bytes[at + 2 + j - 16]! >> 4]!
          : dtype === "q5_0" ? ((j < 16 ? bytes[at + 6 + j]! & 15 : bytes[at + 6 + j - 16]! >> 4) | (((view.getUint32(at + 2, true) >>> j) & 1) << 4)) - 16
          : (j < 16 ? bytes[at + 2 + j]! & 15 : bytes[at + 2 + j - 16]! >> 4) - 8;
        out[r * K + k] = Math.fround(d * q);
      }
    }
  }
  return out;
}

/** Q6_K_U8 super-blocks as floats: d·sc·(q - 32), as dequantizeGGML's Q6_K (one rounding). */
function dequantizeQ6KU8(bytes: Uint8Array, elements: number): Float32Array {
  const out = new Float32Array(elements), view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < elements / 256; b++) {
    const at = b * Q6_K_U8_BYTES, d = f16ToF32(view.getUint16(at + 272, true));
    for (let i = 0; i < 256; i++) out[256 * b + i] = Math.fround(d * view.getInt8(at + 256 + (i >> 4)) * (bytes[at + i]! - 32));
  }
  return out;
}

/**
 * Q6_K super-blocks (elements weights) as Q6_K_U8: each weight's 6 bits (the low nibble from ql,
 * the top 2 bits from qh, in Q6_K's order) as a byte, the scales and d as they are. Exact.
 */
export function q6kToU8(bytes: Uint8Array, elements: number): Uint8Array {
  const out = new Uint8Array((elements / 256) * Q6_K_U8_BYTES);
  for (let b = 0; b < elements / 256; b++) {
    const at = b * GGML_TYPES.Q6_K.bytes, o = b * Q6_K_U8_BYTES;
    for (let n = 0; n < 2; n++) {
      const ql = at + 64 * n, qh = at + 128 + 32 * n, y = o + 128 * n;
      for (let l = 0; l < 32; l++) {
        const h = bytes[qh + l]!;
        out[y + l] = (bytes[ql + l]! & 15) | ((h & 3) << 4);
        out[y + l + 32] = (bytes[ql + l + 32]! & 15) | (((h >> 2) & 3) << 4);
        out[y + l + 64] = (bytes[ql + l]! >> 4) | (((h >> 4) & 3) << 4);
        out[y + l + 96] = (bytes[ql + l + 32]! >> 4) | (((h >> 6) & 3) << 4);
      }
    }
    out.set(bytes.subarray(at + 192, at + 210), o + 256); // 16 scales, then d
  }
  return out;
}

/**
 * Q5_0 / Q5_1 blocks as Q5_0_U8 / Q5_1_U8: d (and m) as they are, then each weight's 5 bits (its
 * nibble, bit j of qh) as a byte. Exact.
 */
export function fiveBitToU8(type: "q5_0" | "q5_1", bytes: Uint8Array): Uint8Array {
  const src = QUANT_BLOCK_BYTES[type], dst = QUANT_BLOCK_BYTES[type === "q5_0" ? "q5_0_u8" : "q5_1_u8"], head = type === "q5_0" ? 2 : 4;
  const blocks = bytes.length / src, out = new Uint8Array(blocks * dst);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < blocks; b++) {
    const at = b * src, o = b * dst, qh = view.getUint32(at + head, true);
    out.set(bytes.subarray(at, at + head), o);
    for (let j = 0; j < 16; j++) {
      const nibbles = bytes[at + head + 4 + j]!;
      out[o + head + j] = (nibbles & 15) | (((qh >>> j) & 1) << 4);
      out[o + head + 16 + j] = (nibbles >> 4) | (((qh >>> (j + 16)) & 1) << 4);
    }
  }
  return out;
}

/**
 * Q5_K super-blocks (elements weights) as Q5_K_U8: d, dmin and the scales as they are, then each
 * weight's 5 bits (its nibble: low for even sub-blocks of a 32-byte pair, high for odd; bit s of
 * qh byte j) as byte 32s + j. Exact; u8ToQ5K packs them back.
 */
export function q5kToU8(bytes: Uint8Array, elements: number): Uint8Array {
  const src = GGML_TYPES.Q5_K.bytes, out = new Uint8Array((elements / 256) * Q5_K_U8_BYTES);
  for (let b = 0; b < elements / 256; b++) {
    const at = b * src, o = b * Q5_K_U8_BYTES;
    out.set(bytes.subarray(at, at + 16), o);
    for (let s = 0; s < 8; s++) {
      for (let j = 0; j < 32; j++) {
        const nibbles = bytes[at + 48 + 32 * (s >> 1) + j]!, high = (bytes[at + 16 + j]! >> s) & 1;
        out[o + 16 + 32 * s + j] = ((s & 1) === 0 ? nibbles & 15 : nibbles >> 4) | (high << 4);
      }
    }
  }
  return out;
}

/** Q5_K_U8 super-blocks back as Q5_K's (q5kToU8's inverse), for the host's reference dequantizer. */
function u8ToQ5K(bytes: Uint8Array, elements: number): Uint8Array {
  const dst = GGML_TYPES.Q5_K.bytes, out = new Uint8Array((elements / 256) * dst);
  for (let b = 0; b < elements / 256; b++) {
    const at = b * Q5_K_U8_BYTES, o = b * dst;
    out.set(bytes.subarray(at, at + 16), o);
    for (let s = 0; s < 8; s++) {
      for (let j = 0; j < 32; j++) {
        const q = bytes[at + 16 + 32 * s + j]!;
        out[o + 48 + 32 * (s >> 1) + j]! |= (q & 15) << ((s & 1) * 4);
        out[o + 16 + j]! |= (q >> 4) << s;
      }
    }
  }
  return out;
}

/** The index of the level nearest v (IQ4_LEVELS ascending; a tie takes the upper). */
function nearestLevel(v: number): number {
  if (v <= IQ4_LEVELS[0]!) return 0;
  if (v >= IQ4_LEVELS[15]!) return 15;
  let lo = 0, hi = 15;
  while (hi - lo > 1) { const mid = (lo + hi) >> 1; if (v < IQ4_LEVELS[mid]!) hi = mid; else lo = mid; }
  return v - IQ4_LEVELS[lo]! < IQ4_LEVELS[hi]! - v ? lo : hi;
}

/**
 * One IQ4_NL block of 32 floats into out[at..at+18), as ggml's reference quantizer searches it:
 * the scale that maps the largest |x| to the outer level, then 15 candidate scales around it,
 * each with the least-squares scale (weights x²) for the levels it rounds to; the best fit's
 * scale, rounded to f16, then each weight's nearest level under that rounded scale.
 */
function iq4nlBlock(xs: Float32Array, out: Uint8Array, at: number): void {
  const max = largestMagnitude(xs), amax = Math.abs(max);
  let d = 0;
  if (amax >= 1e-15) {
    const fit = (id: number): [number, number] => {
      let sumqx = 0, sumq2 = 0;
      for (let j = 0; j < 32; j++) {
        const x = xs[j]!, q = IQ4_LEVELS[nearestLevel(id * x)]!, w = x * x;
        sumqx += w * q * x; sumq2 += w * q * q;
      }
      return [sumqx, sumq2];
    };
    const [qx0, q20] = fit(-IQ4_LEVELS[0]! / max);
    d = q20 > 0 ? qx0 / q20 : max / -IQ4_LEVELS[0]!;
    let best = d * qx0;
    for (let t = -7; t <= 7; t++) {
      const [qx, q2] = fit((t + IQ4_LEVELS[0]!) / max);
      if (q2 > 0 && qx * qx > best * q2) { d = qx / q2; best = d * qx; }
    }
  }
  const h = f32ToF16(d), dh = f16ToF32(h), id = dh !== 0 ? 1 / dh : 0;
  out[at] = h & 255; out[at + 1] = h >> 8;
  for (let j = 0; j < 16; j++) out[at + 2 + j] = nearestLevel(id * xs[j]!) | (nearestLevel(id * xs[j + 16]!) << 4);
}

/** The value of largest magnitude (its sign kept), as ggml's Q4_0 / Q5_0 quantizers scale by. */
function largestMagnitude(xs: ArrayLike<number>): number {
  let amax = 0, max = 0;
  for (let i = 0; i < xs.length; i++) if (Math.abs(xs[i]!) > amax) { amax = Math.abs(xs[i]!); max = xs[i]!; }
  return max;
}

/** C's roundf: halves away from zero. */
function roundAway(v: number): number {
  return v >= 0 ? Math.floor(v + 0.5) : -Math.floor(-v + 0.5);
}

/** The GGUF tensor types dequantizeGGML reads. */
export type ReadableType = "F32" | "F16" | "BF16" | "Q4_0" | "Q4_1" | "Q5_0" | "Q5_1" | "Q8_0" | "IQ4_NL" | "Q2_K" | "Q3_K" | "Q4_K" | "Q5_K" | "Q6_K" | "IQ4_XS";

/**
 * GGUF tensor data of any type this runtime reads, as floats: what a tensor of a type the
 * kernels do not compute on is converted through at load (ggml's reference dequantizers:
 * Q4_1, Q5_0, Q5_1 in blocks of 32; Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS in super-blocks of 256).
 */
export function dequantizeGGML(type: ReadableType, bytes: Uint8Array, elements: number): Float32Array {
  const out = new Float32Array(elements);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const half = (at: number) => f16ToF32(view.getUint16(at, true));
  switch (type) {
    case "F32": for (let i = 0; i < elements; i++) out[i] = view.getFloat32(4 * i, true); return out;
    case "F16": for (let i = 0; i < elements; i++) out[i] = half(2 * i); return out;
    case "BF16": for (let i = 0; i < elements; i++) out[i] = bf16ToF32(view.getUint16(2 * i, true)); return out;
    case "Q8_0": return dequantizeRows("q8_0", bytes, elements);
    case "Q4_0": return dequantizeRows("q4_0", bytes, elements);
    case "IQ4_NL": return dequantizeRows("iq4_nl", bytes, elements);
    case "Q5_0": return dequantizeRows("q5_0", bytes, elements);
    case "Q4_1": return dequantizeRows("q4_1", bytes, elements);
    case "Q5_1": return dequantizeRows("q5_1", bytes, elements);
  }
  const blocks = elements / GGML_TYPES[type].block;
  for (let b = 0; b < blocks; b++) {
    const y = b * 256;
    if (type === "Q2_K") {
      // 16 bytes of 4-bit scale (low) and min (high) per 16 weights, 64 bytes of 2-bit q, f16 d, dmin:
      // byte l of a 128-half holds weights l, l+32, l+64, l+96 (2 bits each, low first).
      const at = b * GGML_TYPES.Q2_K.bytes, d = half(at + 80), dmin = half(at + 82);
      for (let i = 0; i < 256; i++) {
        const n = i >> 7, j = (i >> 5) & 3, l = i & 31, sc = bytes[at + (i >> 4)]!;
        const q = (bytes[at + 16 + 32 * n + l]! >> (2 * j)) & 3;
        out[y + i] = Math.fround(Math.fround(Math.fround(d * (sc & 15)) * q) - Math.fround(dmin * (sc >> 4)));
      }
      continue;
    }
    if (type === "IQ4_XS") {
      const at = b * GGML_TYPES.IQ4_XS.bytes;
      for (let s = 0; s < 8; s++) {
        const step = iq4xsStep(view, at, s), qs = at + 8 + 16 * s;
        for (let j = 0; j < 16; j++) {
          out[y + 32 * s + j] = Math.fround(step * IQ4_LEVELS[bytes[qs + j]! & 15]!);
          out[y + 32 * s + j + 16] = Math.fround(step * IQ4_LEVELS[bytes[qs + j]! >> 4]!);
        }
      }
      continue;
    }
    if (type === "Q3_K") {
      // 32 bytes of high bits (weight i: bit i >> 5 of byte i & 31), 64 bytes of low 2 bits (as
      // Q2_K's), 12 bytes of 16 6-bit scales (low 4 bits in bytes 0-7, high 2 in bytes 8-11), f16 d.
      const at = b * GGML_TYPES.Q3_K.bytes, d = half(at + 108), sc = at + 96;
      for (let i = 0; i < 256; i++) {
        const n = i >> 7, j = (i >> 5) & 3, l = i & 31, g = i >> 4;
        const low4 = g < 8 ? bytes[sc + g]! & 15 : bytes[sc + g - 8]! >> 4;
        const scale = (low4 | (((bytes[sc + 8 + (g & 3)]! >> (2 * (g >> 2))) & 3) << 4)) - 32;
        const q = ((bytes[at + 32 + 32 * n + l]! >> (2 * j)) & 3) - ((bytes[at + l]! >> (i >> 5)) & 1 ? 0 : 4);
        out[y + i] = Math.fround(Math.fround(d * scale) * q);
      }
      continue;
    }
    if (type === "Q6_K") {
      const at = b * GGML_TYPES.Q6_K.bytes, ql0 = at, qh0 = at + 128, sc0 = at + 192, d = half(at + 208);
      for (let n = 0; n < 2; n++) {
        const ql = ql0 + 64 * n, qh = qh0 + 32 * n, sc = sc0 + 8 * n, yn = y + 128 * n;
        for (let l = 0; l < 32; l++) {
          const is = l >> 4;
          const q1 = ((bytes[ql + l]! & 15) | (((bytes[qh + l]! >> 0) & 3) << 4)) - 32;
          const q2 = ((bytes[ql + l + 32]! & 15) | (((bytes[qh + l]! >> 2) & 3) << 4)) - 32;
          const q3 = ((bytes[ql + l]! >> 4) | (((bytes[qh + l]! >> 4) & 3) << 4)) - 32;
          const q4 = ((bytes[ql + l + 32]! >> 4) | (((bytes[qh + l]! >> 6) & 3) << 4)) - 32;
          out[yn + l] = Math.fround(d * view.getInt8(sc + is) * q1);
          out[yn + l + 32] = Math.fround(d * view.getInt8(sc + is + 2) * q2);
          out[yn + l + 64] = Math.fround(d * view.getInt8(sc + is + 4) * q3);
          out[yn + l + 96] = Math.fround(d * view.getInt8(sc + is + 6) * q4);
        }
      }
      continue;
    }
    // Q4_K and Q5_K: d, dmin, 12 bytes of 6-bit sub-block scales and mins, (Q5_K: 32 bytes of high bits), 128 bytes of nibbles.
    const at = b * GGML_TYPES[type].bytes, d = half(at), dmin = half(at + 2), scales = at + 4;
    const qh = at + 16, qs = at + (type === "Q4_K" ? 16 : 48);
    const scaleMin = (j: number): [number, number] => j < 4
      ? [bytes[scales + j]! & 63, bytes[scales + j + 4]! & 63]
      : [(bytes[scales + j + 4]! & 15) | ((bytes[scales + j - 4]! >> 6) << 4), (bytes[scales + j + 4]! >> 4) | ((bytes[scales + j]! >> 6) << 4)];
    for (let j = 0, is = 0, u1 = 1, u2 = 2; j < 256; j += 64, is += 2, u1 <<= 2, u2 <<= 2) {
      const [sc1, m1] = scaleMin(is), [sc2, m2] = scaleMin(is + 1);
      const d1 = d * sc1, dm1 = dmin * m1, d2 = d * sc2, dm2 = dmin * m2;
      const q = qs + j / 2;
      for (let l = 0; l < 32; l++) {
        const hi1 = type === "Q5_K" && (bytes[qh + l]! & u1) !== 0 ? 16 : 0;
        const hi2 = type === "Q5_K" && (bytes[qh + l]! & u2) !== 0 ? 16 : 0;
        out[y + j + l] = Math.fround(d1 * ((bytes[q + l]! & 15) + hi1) - dm1);
        out[y + j + 32 + l] = Math.fround(d2 * ((bytes[q + l]! >> 4) + hi2) - dm2);
      }
    }
  }
  return out;
}

/**
 * Sub-block s's step in the IQ4_XS super-block at `at`: d·(scale - 32), the 6-bit scale's low 4
 * bits a nibble of bytes 4-7, its high 2 bits from the u16 at 2; exact in f32 (an f16 times an
 * integer below 64).
 */
function iq4xsStep(view: DataView, at: number, s: number): number {
  const scale = ((view.getUint8(at + 4 + (s >> 1)) >> (4 * (s & 1))) & 15) | (((view.getUint16(at + 2, true) >> (2 * s)) & 3) << 4);
  return Math.fround(f16ToF32(view.getUint16(at, true)) * (scale - 32));
}

/**
 * IQ4_XS super-blocks (f16 d, 16 bits of the 8 sub-blocks' scales' high 2 bits, 4 bytes of their
 * low 4 bits, 128 bytes of nibbles as IQ4_NL's) as IQ4_NL blocks of 32: the same nibbles under
 * d·(scale - 32) rounded to f16 (a relative 2^-12 at most; the product itself is exact in f32).
 */
export function iq4xsToIq4nl(bytes: Uint8Array, elements: number): Uint8Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Uint8Array((elements / 32) * GGML_TYPES.IQ4_NL.bytes);
  for (let b = 0; b < elements / 256; b++) {
    const at = b * GGML_TYPES.IQ4_XS.bytes;
    for (let s = 0; s < 8; s++) {
      const h = f32ToF16(iq4xsStep(view, at, s)), o = (8 * b + s) * GGML_TYPES.IQ4_NL.bytes;
      out[o] = h & 255; out[o + 1] = h >> 8;
      out.set(bytes.subarray(at + 8 + 16 * s, at + 24 + 16 * s), o + 2);
    }
  }
  return out;
}

/**
 * A Q4_K / Q5_K sub-block's step and offset (x ≈ step·q - offset, q in 0..nmax (15, 31), offset >= 0),
 * as llama.cpp's make_qkx2_quants searches them: from the min/max fit, 21 candidate steps around it (from
 * nmax - 1, Q5_K nmax - 0.5, levels over the range, by 0.1), each with
 * the least-squares step and offset for the levels it rounds to, weighted by rms + |x| (errors on
 * large weights cost more); the fit with the least weighted squared error.
 */
function q4kSubBlockFit(xs: Float32Array, rms: number, nmax: number): [number, number] {
  const n = xs.length, w = FIT_WEIGHTS;
  let lo = 0, hi = -Infinity;
  for (let i = 0; i < n; i++) { lo = Math.min(lo, xs[i]!); hi = Math.max(hi, xs[i]!); }
  if (!(hi > lo)) return [0, -lo];
  for (let i = 0; i < n; i++) w[i] = rms + Math.abs(xs[i]!);
  let bestStep = (hi - lo) / nmax, bestMin = lo, bestError = Infinity;
  for (let c = -1; c <= 20; c++) {
    // c = -1: the min/max fit itself; else a candidate scale and its least-squares fit.
    const iscale = c < 0 ? nmax / (hi - lo) : (nmax - (nmax === 15 ? 1 : 0.5) + 0.1 * c) / (hi - lo);
    let sw = 0, sl = 0, sl2 = 0, sx = 0, sxl = 0;
    for (let i = 0; i < n; i++) {
      const q = Math.max(0, Math.min(nmax, Math.round(iscale * (xs[i]! - lo))));
      FIT_LEVELS[i] = q;
      sw += w[i]!; sl += w[i]! * q; sl2 += w[i]! * q * q; sx += w[i]! * xs[i]!; sxl += w[i]! * q * xs[i]!;
    }
    let step = 1 / iscale, min = lo;
    if (c >= 0) {
      const det = sw * sl2 - sl * sl;
      if (!(det > 0)) continue;
      step = (sw * sxl - sx * sl) / det; min = (sl2 * sx - sl * sxl) / det;
      if (min > 0) { min = 0; step = sxl / sl2; }
      if (!(step > 0)) continue;
    }
    let e = 0;
    for (let i = 0; i < n; i++) { const r = step * FIT_LEVELS[i]! + min - xs[i]!; e += w[i]! * r * r; }
    if (e < bestError) { bestError = e; bestStep = step; bestMin = min; }
  }
  return [bestStep, -bestMin];
}

/** The root mean square of a super-block's weights (the fits weigh errors by rms + |x|). */
function rootMeanSquare(xs: Float32Array): number {
  let sumSquares = 0;
  for (let i = 0; i < xs.length; i++) sumSquares += xs[i]! * xs[i]!;
  return Math.sqrt(sumSquares / xs.length);
}

/** Scratch for the fits (a sub-block's weights and levels). */
const FIT_WEIGHTS = new Float64Array(32), FIT_LEVELS = new Int32Array(32);

/**
 * A Q6_K / Q3_K group of 16's step (x ≈ step·q, q in -nmax..nmax-1: 32, 4), as llama.cpp's
 * make_qx_quants searches it: 19 candidate scales around max|x| / nmax, signed so that the largest
 * |x| takes level -nmax (the range's longer end), each with the least-squares step for the levels
 * it rounds to, weighted by x²; the fit with the least error. The step is signed, as the stored
 * scale is.
 */
function signedGroupFit(xs: Float32Array, nmax: number): number {
  const n = xs.length;
  let amax = 0, max = 0;
  for (let i = 0; i < n; i++) if (Math.abs(xs[i]!) > amax) { amax = Math.abs(xs[i]!); max = xs[i]!; }
  if (amax === 0) return 0;
  let best = -max / nmax, bestError = Infinity;
  for (let c = -9; c <= 9; c++) {
    const iscale = -(nmax + 0.1 * c) / max;
    let sxl = 0, sll = 0;
    for (let i = 0; i < n; i++) {
      const q = Math.max(-nmax, Math.min(nmax - 1, Math.round(iscale * xs[i]!))), w = xs[i]! * xs[i]!;
      FIT_LEVELS[i] = q;
      sxl += w * xs[i]! * q; sll += w * q * q;
    }
    if (!(sll > 0)) continue;
    const step = sxl / sll;
    let e = 0;
    for (let i = 0; i < n; i++) { const r = step * FIT_LEVELS[i]! - xs[i]!; e += xs[i]! * xs[i]! * r * r; }
    if (e < bestError) { bestError = e; best = step; }
  }
  return best;
}

/**
 * Blocks of a GGUF type from floats, for quantizing at load (--dtype q4_k / q5_k / q6_k ...) and
 * for writing files (`gqa-wasm quantize`): Q5_0 / Q5_1 by quantizeRows (ggml's reference); Q4_K and
 * Q5_K with each sub-block of 32's step and offset fitted as llama.cpp fits them (q4kSubBlockFit,
 * 16 / 32 levels), stored in 6 bits against the super-block's f16 d and dmin; Q6_K with each 16 weights' step fitted as
 * llama.cpp fits it (q6kGroupFit), in 8 bits against the super-block's f16 d, q = round(x /
 * (d·sc)) + 32 in 0..63. K must be a multiple of the block (32, 256).
 */
export function quantizeGGML(type: "Q5_0" | "Q5_1" | "Q2_K" | "Q3_K" | "Q4_K" | "Q5_K" | "Q6_K", x: Float32Array, K: number): Uint8Array {
  const { block, bytes: bb } = GGML_TYPES[type];
  if (K % block !== 0 || x.length % K !== 0) throw new RangeError(`quantizeGGML: rows of ${K} are not whole ${type} blocks of ${block}`);
  if (type === "Q5_0" || type === "Q5_1") {
    const dtype = type === "Q5_0" ? "q5_0" : "q5_1", out = new Uint8Array((x.length / K) * quantRowBytes(dtype, K));
    quantizeRows(dtype, x, K, out);
    return out;
  }
  const n = x.length / block, out = new Uint8Array(n * bb), view = new DataView(out.buffer);
  for (let b = 0; b < n; b++) {
    const xs = x.subarray(b * block, (b + 1) * block), at = b * bb;
    if (type === "Q3_K") {
      // Each 16's signed step (levels -4..3), in 6 bits (s - 32) against the super-block's f16 d.
      const groups = Array.from({ length: 16 }, (_, g) => signedGroupFit(xs.subarray(16 * g, 16 * g + 16), 4));
      const largest = groups.reduce((m, v) => (Math.abs(v) > Math.abs(m) ? v : m), 0);
      const d = f16ToF32(f32ToF16(largest / -32));
      view.setUint16(at + 108, f32ToF16(d), true);
      for (let g = 0; g < 16; g++) {
        const sc = d ? Math.max(-32, Math.min(31, Math.round(groups[g]! / d))) : 0, stored = sc + 32, step = d * sc;
        out[at + 96 + (g & 7)] = out[at + 96 + (g & 7)]! | ((stored & 15) << (g < 8 ? 0 : 4));
        out[at + 104 + (g & 3)] = out[at + 104 + (g & 3)]! | ((stored >> 4) << (2 * (g >> 2)));
        for (let l = 0; l < 16; l++) {
          const i = 16 * g + l, q = (step ? Math.max(-4, Math.min(3, Math.round(xs[i]! / step))) : 0) + 4;
          // Weight i = 128n + 32j + l': 2 bits at 2j of byte 32n + l', its third bit at 4n + j of byte l'.
          const n = i >> 7, j = (i >> 5) & 3, b = i & 31;
          out[at + 32 + 32 * n + b] = out[at + 32 + 32 * n + b]! | ((q & 3) << (2 * j));
          out[at + b] = out[at + b]! | ((q >> 2) << (4 * n + j));
        }
      }
      continue;
    }
    if (type === "Q2_K") {
      // Each 16's step and offset (levels 0..3) as Q4_K's sub-blocks are fitted, in 4 bits each
      // against the super-block's f16 d and dmin.
      const rms = rootMeanSquare(xs);
      const fits = Array.from({ length: 16 }, (_, g) => q4kSubBlockFit(xs.subarray(16 * g, 16 * g + 16), rms, 3));
      const d = f16ToF32(f32ToF16(Math.max(...fits.map((f) => f[0])) / 15)), dmin = f16ToF32(f32ToF16(Math.max(...fits.map((f) => f[1])) / 15));
      view.setUint16(at + 80, f32ToF16(d), true);
      view.setUint16(at + 82, f32ToF16(dmin), true);
      for (let g = 0; g < 16; g++) {
        const sc = d ? Math.min(15, Math.round(fits[g]![0] / d)) : 0, m = dmin ? Math.min(15, Math.round(fits[g]![1] / dmin)) : 0;
        out[at + g] = sc | (m << 4);
        const step = d * sc, offset = dmin * m;
        for (let l = 0; l < 16; l++) {
          const i = 16 * g + l, q = step ? Math.max(0, Math.min(3, Math.round((xs[i]! + offset) / step))) : 0;
          out[at + 16 + 32 * (i >> 7) + (i & 31)] = out[at + 16 + 32 * (i >> 7) + (i & 31)]! | (q << (2 * ((i >> 5) & 3)));
        }
      }
      continue;
    }
    if (type === "Q6_K") {
      const groups = Array.from({ length: 16 }, (_, g) => signedGroupFit(xs.subarray(16 * g, 16 * g + 16), 32));
      const d = f16ToF32(f32ToF16(Math.max(...groups.map(Math.abs)) / 127));
      view.setUint16(at + 208, f32ToF16(d), true);
      for (let g = 0; g < 16; g++) {
        const sc = d ? Math.max(-127, Math.min(127, Math.round(groups[g]! / d))) : 0;
        view.setInt8(at + 192 + g, sc);
        const step = d * sc;
        for (let l = 0; l < 16; l++) {
          const i = 16 * g + l, q = step ? Math.max(0, Math.min(63, Math.round(xs[i]! / step) + 32)) : 32;
          // Weight i of half n = i >> 7: low nibble in byte (i & 31) + 32·((i >> 5) & 1) of the
          // half's 64 (the high nibble for (i >> 6) & 1), its top 2 bits at bit 2·((i >> 5) & 3) of qh byte i & 31.
          const n = i >> 7, j = i & 127, lb = at + 64 * n + (j & 31) + 32 * ((j >> 5) & 1), hb = at + 128 + 32 * n + (j & 31);
          out[lb] = (j >> 6) & 1 ? (out[lb]! & 0x0f) | ((q & 15) << 4) : (out[lb]! & 0xf0) | (q & 15);
          out[hb] = out[hb]! | ((q >> 4) << (2 * ((j >> 5) & 3)));
        }
      }
      continue;
    }
    const scales = new Float64Array(8), mins = new Float64Array(8), rms = rootMeanSquare(xs);
    const nmax = type === "Q5_K" ? 31 : 15, qs = at + (type === "Q5_K" ? 48 : 16);
    for (let s = 0; s < 8; s++) [scales[s], mins[s]] = q4kSubBlockFit(xs.subarray(32 * s, 32 * s + 32), rms, nmax);
    const d = f16ToF32(f32ToF16(Math.max(...scales) / 63)), dmin = f16ToF32(f32ToF16(Math.max(...mins) / 63));
    view.setUint16(at, f32ToF16(d), true);
    view.setUint16(at + 2, f32ToF16(dmin), true);
    const sc = Array.from(scales, (v) => (d ? Math.min(63, Math.round(v / d)) : 0));
    const mn = Array.from(mins, (v) => (dmin ? Math.min(63, Math.round(v / dmin)) : 0));
    for (let j = 0; j < 4; j++) {
      out[at + 4 + j] = sc[j]! | ((sc[j + 4]! >> 4) << 6);
      out[at + 8 + j] = mn[j]! | ((mn[j + 4]! >> 4) << 6);
      out[at + 12 + j] = (sc[j + 4]! & 15) | ((mn[j + 4]! & 15) << 4);
    }
    for (let s = 0; s < 8; s++) {
      const step = d * sc[s]!, offset = dmin * mn[s]!;
      for (let l = 0; l < 32; l++) {
        const q = step ? Math.max(0, Math.min(nmax, Math.round((xs[32 * s + l]! + offset) / step))) : 0;
        // Sub-blocks 2k and 2k+1 share 32 bytes: low nibbles, then high nibbles; Q5_K's fifth bit is bit s of qh byte l.
        const byte = qs + 32 * (s >> 1) + l;
        out[byte] = (s & 1) === 0 ? (out[byte]! & 0xf0) | (q & 15) : (out[byte]! & 0x0f) | ((q & 15) << 4);
        if (q > 15) out[at + 16 + l] = out[at + 16 + l]! | (1 << s);
      }
    }
  }
  return out;
}
