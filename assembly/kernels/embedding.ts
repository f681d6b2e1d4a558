import { widenRow } from "../simd";
import { blockBytes, dequantizeRow, QK } from "./linear-quant";

// Embedding lookup: rows [rowBegin, rowEnd) of out [rows, K] (f32) are the table's rows ids[row]
// (i32 token ids, checked by the host), widened or dequantized from the weight dtype exactly as
// the host's readers compute them (a quantized weight d·q is one f32 product), so a token's row
// is the same whichever side reads it. In a kernel program the lookup is part of the step: the
// host writes the ids, not the rows.

// @ts-ignore: decorator
@inline function embedRows<T>(table: usize, K: i32, ids: usize, rowBegin: i32, rowEnd: i32, out: usize, quant: i32): void {
  const rb = quant != 0 ? <usize>((K + QK - 1) / QK) * blockBytes(quant == 4) : <usize>K * sizeof<T>(), ldo = <usize>K << 2;
  for (let r = rowBegin; r < rowEnd; r++) {
    const src = table + <usize>load<i32>(ids + (<usize>r << 2)) * rb, dst = out + <usize>r * ldo;
    if (quant != 0) dequantizeRow(src, K, dst, quant == 4);
    else widenRow<T>(src, K, dst);
  }
}

export function embed_rows_f32(table: usize, K: i32, ids: usize, rowBegin: i32, rowEnd: i32, out: usize): void {
  embedRows<f32>(table, K, ids, rowBegin, rowEnd, out, 0);
}
/** bfloat16 rows (u16 elements). */
export function embed_rows_bf16(table: usize, K: i32, ids: usize, rowBegin: i32, rowEnd: i32, out: usize): void {
  embedRows<u16>(table, K, ids, rowBegin, rowEnd, out, 0);
}
/** IEEE half rows (i16 elements). */
export function embed_rows_f16(table: usize, K: i32, ids: usize, rowBegin: i32, rowEnd: i32, out: usize): void {
  embedRows<i16>(table, K, ids, rowBegin, rowEnd, out, 0);
}
export function embed_rows_q8_0(table: usize, K: i32, ids: usize, rowBegin: i32, rowEnd: i32, out: usize): void {
  embedRows<u8>(table, K, ids, rowBegin, rowEnd, out, 8);
}
export function embed_rows_q4_0(table: usize, K: i32, ids: usize, rowBegin: i32, rowEnd: i32, out: usize): void {
  embedRows<u8>(table, K, ids, rowBegin, rowEnd, out, 4);
}
