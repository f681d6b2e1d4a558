import { widenRow } from "../simd";
import { blockBytes, dequantizeRow, QK } from "./linear-quant";
import { dequantizeRowK, isKQuant, kquantRowBytes } from "./linear-kquant";
import { WEIGHT_IQ4_NL, WEIGHT_Q4_1, WEIGHT_Q5_1, WEIGHT_Q2_K, WEIGHT_Q3_K, WEIGHT_Q4_0, WEIGHT_Q4_K, WEIGHT_Q5_0, WEIGHT_Q5_0_U8, WEIGHT_Q5_1_U8, WEIGHT_Q5_K, WEIGHT_Q5_K_U8, WEIGHT_Q6_K, WEIGHT_Q6_K_U8, WEIGHT_Q8_0 } from "../abi";

// Embedding lookup: rows [rowBegin, rowEnd) of out [rows, K] (f32) are the table's rows ids[row]
// (i32 token ids, checked by the host), widened or dequantized from the weight dtype exactly as
// the host's readers compute them (a quantized weight d·q is one f32 product), so a token's row
// is the same whichever side reads it. In a kernel program the lookup is part of the step: the
// host writes the ids, not the rows.

// @ts-ignore: decorator
/** format: a WEIGHT_* code, or -1 for a table of T elements. */
// @ts-ignore: decorator
@inline function embedRows<T>(table: usize, K: i32, ids: usize, rowBegin: i32, rowEnd: i32, out: usize, format: i32): void {
  const kquant = isKQuant(format);
  const rb = format < 0 ? <usize>K * sizeof<T>() : kquant ? kquantRowBytes(K, format) : <usize>((K + QK - 1) / QK) * blockBytes(format);
  const ldo = <usize>K << 2;
  for (let r = rowBegin; r < rowEnd; r++) {
    const src = table + <usize>load<i32>(ids + (<usize>r << 2)) * rb, dst = out + <usize>r * ldo;
    if (format < 0) widenRow<T>(src, K, dst);
    else if (kquant) dequantizeRowK(src, K, dst, format);
    else dequantizeRow(src, K, dst, format);
  }
}

export function embed_rows_f32(table: usize, K: i32, ids: usize, rowBegin: i32, rowEnd: i32, out: usize): void {
  embedRows<f32>(table, K, ids, rowBegin, rowEnd, out, -1);
}
/** bfloat16 rows (u16 elements). */
export function embed_rows_bf16(table: usize, K: i32, ids: usize, rowBegin: i32, rowEnd: i32, out: usize): void {
  embedRows<u16>(table, K, ids, rowBegin, rowEnd, out, -1);
}
/** IEEE half rows (i16 elements). */
export function embed_rows_f16(table: usize, K: i32, ids: usize, rowBegin: i32, rowEnd: i32, out: usize): void {
  embedRows<i16>(table, K, ids, rowBegin, rowEnd, out, -1);
}
export function embed_rows_q8_0(table: usize, K: i32, ids: usize, rowBegin: i32, rowEnd: i32, out: usize): void {
  embedRows<u8>(table, K, ids, rowBegin, rowEnd, out, WEIGHT_Q8_0);
}
export function embed_rows_q4_0(table: usize, K: i32, ids: usize, rowBegin: i32, rowEnd: i32, out: usize): void {
  embedRows<u8>(table, K, ids, rowBegin, rowEnd, out, WEIGHT_Q4_0);
}
export function embed_rows_q5_0(table: usize, K: i32, ids: usize, rowBegin: i32, rowEnd: i32, out: usize): void {
  embedRows<u8>(table, K, ids, rowBegin, rowEnd, out, WEIGHT_Q5_0);
}
export function embed_rows_q4_1(table: usize, K: i32, ids: usize, rowBegin: i32, rowEnd: i32, out: usize): void {
  embedRows<u8>(table, K, ids, rowBegin, rowEnd, out, WEIGHT_Q4_1);
}
export function embed_rows_q5_1(table: usize, K: i32, ids: usize, rowBegin: i32, rowEnd: i32, out: usize): void {
  embedRows<u8>(table, K, ids, rowBegin, rowEnd, out, WEIGHT_Q5_1);
}
export function embed_rows_iq4_nl(table: usize, K: i32, ids: usize, rowBegin: i32, rowEnd: i32, out: usize): void {
  embedRows<u8>(table, K, ids, rowBegin, rowEnd, out, WEIGHT_IQ4_NL);
}
/** Q2_K / Q3_K / Q4_K / Q5_K / Q6_K / Q6_K_U8 rows (K a multiple of 256). */
export function embed_rows_q2_k(table: usize, K: i32, ids: usize, rowBegin: i32, rowEnd: i32, out: usize): void {
  embedRows<u8>(table, K, ids, rowBegin, rowEnd, out, WEIGHT_Q2_K);
}
export function embed_rows_q3_k(table: usize, K: i32, ids: usize, rowBegin: i32, rowEnd: i32, out: usize): void {
  embedRows<u8>(table, K, ids, rowBegin, rowEnd, out, WEIGHT_Q3_K);
}
export function embed_rows_q4_k(table: usize, K: i32, ids: usize, rowBegin: i32, rowEnd: i32, out: usize): void {
  embedRows<u8>(table, K, ids, rowBegin, rowEnd, out, WEIGHT_Q4_K);
}
export function embed_rows_q5_k(table: usize, K: i32, ids: usize, rowBegin: i32, rowEnd: i32, out: usize): void {
  embedRows<u8>(table, K, ids, rowBegin, rowEnd, out, WEIGHT_Q5_K);
}
export function embed_rows_q6_k(table: usize, K: i32, ids: usize, rowBegin: i32, rowEnd: i32, out: usize): void {
  embedRows<u8>(table, K, ids, rowBegin, rowEnd, out, WEIGHT_Q6_K);
}
export function embed_rows_q6_k_u8(table: usize, K: i32, ids: usize, rowBegin: i32, rowEnd: i32, out: usize): void {
  embedRows<u8>(table, K, ids, rowBegin, rowEnd, out, WEIGHT_Q6_K_U8);
}
/** Q5_0 / Q5_1 a byte a weight (as a file's Q5_0 / Q5_1 load). */
export function embed_rows_q5_0_u8(table: usize, K: i32, ids: usize, rowBegin: i32, rowEnd: i32, out: usize): void {
  embedRows<u8>(table, K, ids, rowBegin, rowEnd, out, WEIGHT_Q5_0_U8);
}
export function embed_rows_q5_1_u8(table: usize, K: i32, ids: usize, rowBegin: i32, rowEnd: i32, out: usize): void {
  embedRows<u8>(table, K, ids, rowBegin, rowEnd, out, WEIGHT_Q5_1_U8);
}
/** Q5_K a byte a weight (as a file's Q5_K loads; K a multiple of 256). */
export function embed_rows_q5_k_u8(table: usize, K: i32, ids: usize, rowBegin: i32, rowEnd: i32, out: usize): void {
  embedRows<u8>(table, K, ids, rowBegin, rowEnd, out, WEIGHT_Q5_K_U8);
}
