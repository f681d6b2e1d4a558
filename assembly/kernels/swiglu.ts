import { exp4 } from "../math/exp";

// The SwiGLU MLP's gate: out = silu(gate) · up = gate / (1 + e^-gate) · up, over n floats, with
// the SIMD exp. out may equal gate or up.
export function swiglu_f32(gate: usize, up: usize, out: usize, n: i32): void {
  const body = <usize>(n & ~3) << 2;
  const one = f32x4.splat(1);
  for (let o: usize = 0; o < body; o += 16) {
    const g = v128.load(gate + o);
    // e^-g overflows to a clamped large value for g << 0, giving silu -> -0: the right limit.
    const silu = f32x4.div(g, f32x4.add(one, exp4(f32x4.neg(g))));
    v128.store(out + o, f32x4.mul(silu, v128.load(up + o)));
  }
  for (let o = body, end = <usize>n << 2; o < end; o += 4) {
    const g = load<f32>(gate + o);
    const e = f32x4.extract_lane(exp4(f32x4.splat(-g)), 0);
    store<f32>(out + o, g / (1 + e) * load<f32>(up + o));
  }
}
