import { fmadd, hsum } from "../simd";

// RMSNorm (Llama, Qwen2, Mistral, DeciLM, Gemma's with 1 + w stored): out = x / sqrt(mean(x²) + eps) · w,
// row by row. Rows [rowBegin, rowEnd) of `dim` floats; out may equal x (in place).
export function rmsnorm_f32(x: usize, w: usize, out: usize, dim: i32, eps: f32, rowBegin: i32, rowEnd: i32): void {
  normRows(x, w, out, dim, eps, rowBegin, rowEnd, false);
}

// The same normalisation added into out (Gemma's norms of the attention and MLP outputs, which
// come before their residual add): out += x / sqrt(mean(x²) + eps) · w.
export function rmsnorm_add_f32(x: usize, w: usize, out: usize, dim: i32, eps: f32, rowBegin: i32, rowEnd: i32): void {
  normRows(x, w, out, dim, eps, rowBegin, rowEnd, true);
}

// @ts-ignore: decorator
@inline function normRows(x: usize, w: usize, out: usize, dim: i32, eps: f32, rowBegin: i32, rowEnd: i32, add: bool): void {
  const rowBytes = <usize>dim << 2;
  const body = <usize>(dim & ~3) << 2;
  for (let r = rowBegin; r < rowEnd; r++) {
    const xr = x + <usize>r * rowBytes, or = out + <usize>r * rowBytes;
    let acc = f32x4.splat(0);
    for (let o: usize = 0; o < body; o += 16) { const v = v128.load(xr + o); acc = fmadd(v, v, acc); }
    let ss = hsum(acc);
    for (let o = body; o < rowBytes; o += 4) { const v = load<f32>(xr + o); ss += v * v; }
    const inv = <f32>1 / Mathf.sqrt(ss / <f32>dim + eps);
    const iv = f32x4.splat(inv);
    for (let o: usize = 0; o < body; o += 16) {
      const y = f32x4.mul(f32x4.mul(v128.load(xr + o), iv), v128.load(w + o));
      v128.store(or + o, add ? f32x4.add(v128.load(or + o), y) : y);
    }
    for (let o = body; o < rowBytes; o += 4) {
      const y = load<f32>(xr + o) * inv * load<f32>(w + o);
      store<f32>(or + o, add ? load<f32>(or + o) + y : y);
    }
  }
}
