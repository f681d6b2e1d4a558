import { exp4, softcap4 } from "../math/exp";

// Elementwise kernels over n floats: the gated MLPs' activations (with the SIMD exp), a scale, a
// scaled add and a soft-cap; out may equal an input.

// SwiGLU (Llama, Qwen, Mistral): out = silu(gate) · up = gate / (1 + e^-gate) · up.
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

const GELU_A: f32 = -1.5957691216057308; // -2·sqrt(2/π)
const GELU_B: f32 = 0.044715;

// GeGLU with the tanh GELU (Gemma's gelu_pytorch_tanh): out = gelu(gate) · up, where
// gelu(g) = g/2 · (1 + tanh(sqrt(2/π)(g + 0.044715 g³))), computed as the identical
// g / (1 + e^(-2·sqrt(2/π)(g + 0.044715 g³))): no cancellation in 1 + tanh for g << 0.
export function geglu_tanh_f32(gate: usize, up: usize, out: usize, n: i32): void {
  const body = <usize>(n & ~3) << 2;
  const one = f32x4.splat(1), a = f32x4.splat(GELU_A), b = f32x4.splat(GELU_B);
  for (let o: usize = 0; o < body; o += 16) {
    const g = v128.load(gate + o);
    const inner = f32x4.mul(f32x4.mul(a, g), f32x4.add(one, f32x4.mul(b, f32x4.mul(g, g))));
    const gelu = f32x4.div(g, f32x4.add(one, exp4(inner)));
    v128.store(out + o, f32x4.mul(gelu, v128.load(up + o)));
  }
  for (let o = body, end = <usize>n << 2; o < end; o += 4) {
    const g = load<f32>(gate + o);
    const e = f32x4.extract_lane(exp4(f32x4.splat(GELU_A * g * (1 + GELU_B * g * g))), 0);
    store<f32>(out + o, g / (1 + e) * load<f32>(up + o));
  }
}

// out = x · s over n floats (Gemma's embeddings times sqrt(hidden_size)); out may equal x.
export function scale_f32(x: usize, out: usize, n: i32, s: f32): void {
  const body = <usize>(n & ~3) << 2, sv = f32x4.splat(s);
  for (let o: usize = 0; o < body; o += 16) v128.store(out + o, f32x4.mul(v128.load(x + o), sv));
  for (let o = body, end = <usize>n << 2; o < end; o += 4) store<f32>(out + o, load<f32>(x + o) * s);
}

// out = cap · tanh(x / cap) over n floats (Gemma 2's final logit soft-capping); out may equal x.
export function softcap_f32(x: usize, out: usize, n: i32, cap: f32): void {
  const body = <usize>(n & ~3) << 2;
  for (let o: usize = 0; o < body; o += 16) v128.store(out + o, softcap4(v128.load(x + o), cap));
  for (let o = body, end = <usize>n << 2; o < end; o += 4) store<f32>(out + o, f32x4.extract_lane(softcap4(f32x4.splat(load<f32>(x + o)), cap), 0));
}

// y += x · s over n floats (Granite's residual_multiplier: the attention and MLP outputs scaled into the residual stream).
export function add_scaled_f32(x: usize, y: usize, n: i32, s: f32): void {
  const body = <usize>(n & ~3) << 2, sv = f32x4.splat(s);
  for (let o: usize = 0; o < body; o += 16) v128.store(y + o, f32x4.add(v128.load(y + o), f32x4.mul(v128.load(x + o), sv)));
  for (let o = body, end = <usize>n << 2; o < end; o += 4) store<f32>(y + o, load<f32>(y + o) + load<f32>(x + o) * s);
}
